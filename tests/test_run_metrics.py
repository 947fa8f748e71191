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


def test_the_scrape_counts_runs_without_reading_them(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    for i in range(30):
        store.create_run(_run(f"r{i}", f"m{i % 3}", RunState.QUEUED), actor="test")
    for i in range(0, 30, 5):
        assert store.transition(f"r{i}", RunState.RUNNING, "test", [RunState.QUEUED])
    # r0, r15 are m0's; r10, r25 m1's; r5, r20 m2's.
    assert store.run_counts() == {(f"m{m}", state): n for m in range(3)
                                  for state, n in (("queued", 8), ("running", 2))}

    def no_listing(*args: object, **kwargs: object) -> list[ActionRun]:
        raise AssertionError("the scrape read the runs one by one")

    store.list_runs = no_listing  # type: ignore[method-assign]
    registry = CollectorRegistry()
    registry.register(RunCollector(store, {}.get))
    text = generate_latest(registry).decode()
    assert 'lifeguard_action_runs{model="m0",state="running"} 2.0' in text
    assert 'lifeguard_action_runs{model="m1",state="queued"} 8.0' in text
