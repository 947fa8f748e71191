"""End to end on real parts: a config file with an approve-mode policy, the control plane on a
real SQLite file and real HTTP, evaluations in, approval through the CLI, the runner's worker
processes executing the pipeline, the audit trail readable back over the API, the steps'
metrics on /metrics."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from policy_fixtures import TESTS, evaluation
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from daemon.act.control import ControlPlane
from daemon.act.runs import RunState
from daemon.act.store import StateStore
from daemon.cli import app
from daemon.config import load_config
from daemon.http import ApiServer, create_app

CONFIG = """
api: {{token_env: LG_E2E_TOKEN}}
state: {{path: {db}}}
models:
  - name: sentiment
    policy:
      trigger: {{all: [{{key: "drift.*"}}, {{key: accuracy.accuracy}}]}}
      hold: 2
      mode: approve
      pipeline: quick
pipelines:
  quick:
    steps:
      - {{name: first, uses: "runner_quick_steps:record", params: {{log: {log}}}}}
      - {{name: second, uses: "runner_quick_steps:record", params: {{log: {log}}}}}
runner: {{poll_interval: 0.05}}
"""


@pytest.mark.integration
def test_breach_to_approved_run_to_audit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LG_E2E_TOKEN", "e2e-token-0123456789")
    cfg = tmp_path / "lifeguard.yaml"
    cfg.write_text(CONFIG.format(db=tmp_path / "state.db", log=tmp_path / "steps.log"))
    config = load_config(cfg)
    store = StateStore(config.state.path)
    registry = CollectorRegistry()  # the daemon's: what /metrics serves
    control = ControlPlane(config, store, snapshot_provider=lambda m: tmp_path / "snap.jsonl",
                           worker_env={"PYTHONPATH": str(TESTS)}, registry=registry).start()
    server = ApiServer(create_app(registry, lambda: (True, ""), lambda: (True, ""),
                                  [control.router])).start()
    monkeypatch.setenv("LIFEGUARD_URL", server.url)
    try:
        breach = {"drift.distribution[text_length]": True, "accuracy.accuracy": True}
        half = {"drift.distribution[text_length]": True, "accuracy.accuracy": False}
        fired = [control.on_evaluation(evaluation("sentiment", i, b)).fire
                 for i, b in enumerate([breach, half, breach, breach, breach])]
        assert fired == [False, False, False, True, False]
        (run,) = store.list_runs()
        assert run.state is RunState.PENDING_APPROVAL
        time.sleep(0.2)
        assert not (tmp_path / "steps.log").exists(), "approve mode waits"
        result = CliRunner().invoke(app, ["approve", run.id, "--token", "e2e-token-0123456789"])
        assert result.exit_code == 0, result.output
        deadline = time.monotonic() + 30
        while not store.get_run(run.id).state.terminal:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, store.get_run(run.id)
            time.sleep(0.05)
        detail = httpx.get(f"{server.url}/api/v1/runs/{run.id}").json()
        assert detail["state"] == "succeeded" and detail["next_step"] == 2
        assert detail["snapshot_path"] == str(tmp_path / "snap.jsonl")
        actions = [e["action"] for e in detail["audit"]]
        assert actions == ["run.pending_approval", "run.queued", "run.leased", "run.running",
                           "run.step_done", "run.step_done", "run.succeeded"]
        assert (tmp_path / "runs" / run.id / "00-first" / "out.txt").is_file()
        # each worker's step metrics, from its result file, on the daemon's /metrics
        scraped = httpx.get(f"{server.url}/metrics").text
        assert 'lifeguard_action_steps_finished_total{outcome="done",step="second"} 1.0' in scraped
        assert 'lifeguard_action_train_steps{step="first"} 3.0' in scraped
        assert 'lifeguard_action_train_loss{step="first"} 0.25' in scraped
    finally:
        server.stop()
        control.stop()
        store.close()


def test_a_failing_trigger_is_audited_and_the_next_evaluation_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = tmp_path / "lifeguard.yaml"
    cfg.write_text(CONFIG.format(db=tmp_path / "state.db", log=tmp_path / "steps.log")
                   .replace("hold: 2", "hold: 1"))
    config = load_config(cfg)
    store = StateStore(config.state.path)
    answers: list[Path | Exception] = [OSError("snapshot store down"), tmp_path / "s.jsonl"]

    def snapshot(model: str) -> Path:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    control = ControlPlane(config, store, snapshot_provider=snapshot)
    breach = {"drift.distribution[x]": True, "accuracy.accuracy": True}
    first = control.on_evaluation(evaluation("sentiment", 0, breach))
    assert not first.fire and "snapshot store down" in first.reason
    assert [a.action for a in store.list_audit()][-1] == "trigger.failed"
    assert control.on_evaluation(evaluation("sentiment", 1, breach)).fire
    assert store.list_runs()[0].snapshot_path == str(tmp_path / "s.jsonl")
    store.close()
