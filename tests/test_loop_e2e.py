"""The closed loop end to end, on real processes: broker, three replicas, the daemon, the
simulator. A shift is detected, a run retrains, gates, exports, quantizes, canaries and
promotes, and accuracy on the new domain recovers; a stationary run fires nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.loop import run_scenario
from harness.processes import LoopSettings, Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

SETTINGS = LoopSettings(replicas=3, window=400, reference=300, evaluate_every=100,
                        min_labels=120, hold=2, canary_events=80, canary_labels=25,
                        train_epochs=6, train_lr=2e-3, train_max_length=48,
                        embedding_sample=0)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny classifier trained on the base domain, exported and quantized like v1 would be."""
    from actions.contract import StepContext
    from actions.settings import ActionPolicy, TrainConfig
    from actions.steps import run_pipeline
    from harness.tiny_models import build_classifier
    from simulator.corpus import tokenizer_texts, training_examples

    root = tmp_path_factory.mktemp("base")
    examples = training_examples(1500, seed=1)
    checkpoint = build_classifier(root / "checkpoint", examples, steps=250,
                                  tokenizer_texts=tokenizer_texts(400), max_length=48)
    snapshot = root / "holdout.jsonl"
    snapshot.write_text("".join(json.dumps({"request_id": f"b{i}", "text": t, "label": y}) + "\n"
                                for i, (t, y) in enumerate(training_examples(400, seed=2))))
    ctx = StepContext(run_id="base", model_dir=checkpoint, output_dir=root / "artifacts",
                      snapshot=snapshot, threads=2, policy=ActionPolicy(max_quantize_drop=0.03),
                      train=TrainConfig(max_length=48))
    _, quantized = run_pipeline(ctx, ("export_onnx", "quantize"))
    assert quantized.model_dir is not None
    return checkpoint, quantized.model_dir


def _scenario(kind: str, duration_s: float):  # type: ignore[no-untyped-def]
    from simulator.scenarios import ScenarioConfig

    return ScenarioConfig(kind=kind, rate=25, duration_s=duration_s, shift_at_s=25,
                          label_delay_s=1.0, label_jitter_s=1.0, label_coverage=0.9, seed=3)


def test_shift_is_detected_retrained_and_recovered(base: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    checkpoint, deployable = base
    with Stack(tmp_path / "stack", SETTINGS) as stack:
        stack.start(checkpoint, deployable)
        # Long enough for a slow machine; the run ends 40 s after the recovery.
        result = run_scenario(stack, _scenario("abrupt-shift", 600), after_recovery_s=40)
        status = stack.api("/status")
        audit = stack.api("/audit?model=sentiment&limit=500")["entries"]
        logs = {p.name: p.read_text()[-3000:] for p in (tmp_path / "stack" / "logs").glob("*")}
    state = result.state
    assert state.detect_s is not None, [m.text for m in state.moments]
    assert result.runs_created == 1, state.runs
    run = next(iter(state.runs.values()))
    assert run["state"] == "succeeded", (run, logs.get("daemon.log"))
    assert state.recover_s is not None and state.recover_s > state.detect_s
    assert result.pre is not None and result.during is not None and result.post is not None
    assert result.during < result.pre - 0.05, "the shift did not hurt the base model"
    assert result.post > result.during + 0.05, (result.pre, result.during, result.post)
    kinds = [m.kind for m in state.moments]
    assert kinds.index("breach") < kinds.index("run") < kinds.index("recovered")
    model = next(m for m in status["models"] if m["model"] == "sentiment")
    assert model["deployed_version"] == "2"
    actions = [entry["action"] for entry in audit]
    for expected in ("breach.began", "run.running", "run.step_done", "run.succeeded"):
        assert expected in actions, (expected, sorted(set(actions)))
    assert actions.count("run.step_done") == 5


def test_stationary_traffic_fires_no_action(base: tuple[Path, Path], tmp_path: Path) -> None:
    checkpoint, deployable = base
    with Stack(tmp_path / "stack", SETTINGS) as stack:
        stack.start(checkpoint, deployable)
        result = run_scenario(stack, _scenario("stationary", 90))
    assert result.runs_created == 0, result.state.runs
    assert len(result.state.evaluations) >= 5
    assert not any(e["breached"] for e in result.state.evaluations)
    assert set(result.state.served) == {1}
