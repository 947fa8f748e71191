"""Action runs and the deployed version reach the daemon's /metrics from the state store."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from daemon.act.run_metrics import RunCollector
from daemon.act.runs import ActionRun, RunState
from daemon.act.store import StateStore


def _run(run_id: str, model: str, state: RunState) -> ActionRun:
    return ActionRun(id=run_id, model=model, pipeline="retrain", source="evaluation",
                     mode="auto", state=state, steps=({"name": "fine_tune"},))


def test_runs_by_state_and_deployed_version_are_exported(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    store.create_run(_run("r1", "sentiment", RunState.QUEUED), actor="test")
    store.create_run(_run("r2", "sentiment", RunState.PENDING_APPROVAL), actor="test")
    store.create_run(_run("r3", "support", RunState.QUEUED), actor="test")
    assert store.transition("r1", RunState.RUNNING, "test", [RunState.QUEUED])
    registry = CollectorRegistry()
    registry.register(RunCollector(store, {"sentiment": "3"}.get))
    text = generate_latest(registry).decode()
    assert 'lifeguard_action_runs{model="sentiment",state="running"} 1.0' in text
    assert 'lifeguard_action_runs{model="sentiment",state="pending_approval"} 1.0' in text
    assert 'lifeguard_action_runs{model="support",state="queued"} 1.0' in text
    assert 'lifeguard_deployed_version{model="sentiment"} 3.0' in text
    assert 'lifeguard_deployed_version{model="support"}' not in text
