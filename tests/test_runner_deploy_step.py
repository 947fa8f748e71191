"""The deploy step through a real worker: its fleet, rollout store and daemon URL come from the
spec file alone; it publishes the run's model once, and an unreachable fleet is retryable."""

from __future__ import annotations

import json
from pathlib import Path

from policy_fixtures import TESTS, queued_run

from actions.contract import DeployTarget, WorkerSettings, content_sha256
from daemon.act.runner import Runner
from daemon.act.runs import RunState, StepRecord
from daemon.act.store import StateStore
from deploy.config import FleetConfig
from deploy.repository import ModelRepository


def test_deploy_step_publishes_once_and_retries_an_unreachable_fleet(tmp_path: Path) -> None:
    exported = tmp_path / "exported"
    exported.mkdir()
    (exported / "model.onnx").write_bytes(b"not loaded: no replica answers")
    (exported / "model_info.json").write_text(json.dumps({"task": "sequence-classification"}))
    fleet = FleetConfig.model_validate({
        "replicas": ["http://127.0.0.1:9"], "repository": str(tmp_path / "repo"),
        "rollout": {"strategy": "canary", "request_timeout_s": 1}})
    settings = WorkerSettings(deploy=DeployTarget(
        # the run's own store, as in the daemon: the deploy checks the run's lease there
        fleet=fleet, state_path=tmp_path / "state.db", api_url="http://127.0.0.1:9",
        token="t"))  # type: ignore[arg-type]
    store = StateStore(tmp_path / "state.db")
    try:
        steps = ({"name": "export_onnx"},
                 {"name": "deploy", "max_attempts": 2, "backoff": 0.01, "timeout": 60,
                  "params": {"trigger": "drift"}})
        run_id = queued_run(store, "sentiment", steps)
        store.transition(run_id, RunState.RUNNING, "test", [RunState.QUEUED])
        store.complete_step(run_id, StepRecord(0, "export_onnx", "ok", {"model": {
            "path": str(exported), "sha256": content_sha256(exported)}}))
        Runner(store, tmp_path / "runs", settings=settings,
               worker_env={"PYTHONPATH": str(TESTS)}).execute(run_id)
        run = store.get_run(run_id)
        assert run is not None and run.state is RunState.FAILED
        assert "no replica is reachable" in (run.error or "")
        last = store.transitions(run_id)[-1].evidence
        assert (last["kind"], last["error_type"]) == ("retryable", "RetryableStepError")
        retries = [a for a in store.list_audit(run_id=run_id) if a.action == "run.step_retry"]
        assert len(retries) == 1
        # two attempts, one version: publishing is idempotent per run id
        repository = ModelRepository(tmp_path / "repo")
        assert repository.versions("sentiment") == [1]
        record = repository.record("sentiment", 1)
        assert (record.run_id, record.trigger) == (run_id, "drift")
    finally:
        store.close()
