"""The closed loop for a generator end to end, on real processes: broker, two replicas serving
a small GPT-2 through their OpenAI endpoint, the daemon, the support-chat simulator. The shift
to a new product is detected by the generator's detectors (reference score, rating); a run
trains on the snapshot the daemon wrote, gates, exports, quantizes, canaries and promotes, and
answer quality recovers. A stationary run fires nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.base_model import BaseModel
from harness.chat_loop import run_support
from harness.processes import Stack
from harness.support_demo import support_scenario, support_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.long,
              pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> BaseModel:
    from harness.support_model import prepare_support_model

    return prepare_support_model(tmp_path_factory.mktemp("support-cache"), tiny=True)


def test_generator_shift_is_detected_retrained_and_recovered(base: BaseModel,
                                                             tmp_path: Path) -> None:
    with Stack(tmp_path / "stack", support_settings(tiny=True)) as stack:
        stack.start(base.checkpoint, base.deployable)
        # chats through /v1/chat/completions: the snapshot keeps their messages, and the
        # retrain renders them as the replica did
        result = run_support(stack, support_scenario(4.0, 25.0, 600.0), after_recovery_s=20,
                             endpoint="chat")
        snapshots = sorted((tmp_path / "stack" / "artifacts").rglob("*.jsonl"))
    state = result.state
    breaches = [b["key"] for e in state.evaluations if e["breached"] for b in e["breaches"]]
    assert result.detect_s is not None, [m.text for m in state.moments]
    assert {"quality.reference_score_vs_reference",
            "accuracy.mean_rating_vs_reference"} & set(breaches)
    succeeded = [r for r in state.runs.values() if r["state"] == "succeeded"]
    assert len(succeeded) == 1, [m.text for m in state.moments]
    steps = [m.text for m in state.moments if m.kind == "step"]
    for name in ("fine_tune", "evaluate", "export_onnx", "quantize", "deploy"):
        assert any(s.startswith(f"{name} done") for s in steps), steps
    # fine_tune read the snapshot the daemon captured at the trigger: its rows are the
    # simulator's requests (run-tag ids), with the thermostat's references among them.
    assert snapshots and any("thermostat" in p.read_text() for p in snapshots)
    rows = [json.loads(line) for p in snapshots for line in p.read_text().splitlines()]
    assert any(r.get("messages", [{}])[0].get("role") == "user" for r in rows), rows[:2]
    assert result.recover_s is not None
    assert result.during is not None and result.post is not None
    assert result.post > result.during + 0.1, (result.pre, result.during, result.post)


def test_stationary_support_traffic_fires_nothing(base: BaseModel, tmp_path: Path) -> None:
    with Stack(tmp_path / "stack", support_settings(tiny=True)) as stack:
        stack.start(base.checkpoint, base.deployable)
        result = run_support(stack, support_scenario(4.0, 25.0, 70.0, stationary=True),
                             endpoint="completions")
    evaluated = [e for e in result.state.evaluations if e.get("results")]
    assert evaluated, "the daemon never evaluated the stationary traffic"
    assert result.runs_created == 0, [m.text for m in result.state.moments]
