"""Run leases and fencing on both backends: a revoked owner's stale writes (run state, step
records, rollout records) are refused; a moved model stops its run at a step boundary and the
new owner goes on from the next step; a lease taken over kills the old holder's worker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from policy_fixtures import TESTS, queued_run, quick_steps

from daemon.act.runner import Runner
from daemon.act.runs import RunState, StepRecord
from daemon.act.store import StaleLeaseError, StateStore
from deploy.rollout_store import RolloutStore
from lifeguard.state.fencing import Fence


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(state_url: str) -> Iterator[StateStore]:
    s = StateStore(state_url)
    yield s
    s.close()


def _wait(predicate, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_a_revoked_owners_stale_writes_are_refused_by_the_fencing_token(
        state_url: str, tmp_path: Path) -> None:
    clock = Clock()
    store = StateStore(state_url, clock=clock)
    run_id = queued_run(store, "m", quick_steps(tmp_path / "log", n=2))
    old = store.acquire_lease(run_id, "a", ttl_s=10)
    assert old == Fence(run_id, "a", 1)
    assert store.acquire_lease(run_id, "b", ttl_s=10) is None, "a's lease is live"
    assert store.transition(run_id, RunState.RUNNING, "runner", [RunState.QUEUED], fence=old)
    assert store.complete_step(run_id, StepRecord(0, "s0", "ok"), fence=old)

    clock.now += 11  # a stalls past its lease; b takes the run over with a higher token
    new = store.acquire_lease(run_id, "b", ttl_s=10)
    assert new == Fence(run_id, "b", 2)
    with pytest.raises(StaleLeaseError, match="fencing token 1 of a is stale"):
        store.complete_step(run_id, StepRecord(1, "s1", "ok"), fence=old)
    with pytest.raises(StaleLeaseError):
        store.transition(run_id, RunState.FAILED, "runner", [RunState.RUNNING], fence=old)
    with pytest.raises(StaleLeaseError):
        store.renew_lease(old, ttl_s=10)
    assert not store.release_lease(old), "a cannot let b's lease lapse"
    rollouts = RolloutStore(state_url, fence=old)
    with pytest.raises(StaleLeaseError):  # no fleet action either: the record comes first
        rollouts.create("m", 1, 2, "rolling", "rolling", {"http://r": 2}, {"http://r": 1})
    assert RolloutStore(state_url).latest("m") is None
    run = store.get_run(run_id)
    assert run is not None and run.state is RunState.RUNNING and run.next_step == 1
    assert store.complete_step(run_id, StepRecord(1, "s1", "ok"), fence=new)
    assert RolloutStore(state_url, fence=new).create(
        "m", 1, 2, "rolling", "rolling", {"http://r": 2}, {"http://r": 1}).to_version == 2
    leased = [a for a in store.list_audit(run_id=run_id) if a.action == "run.leased"]
    assert [(a.actor, a.evidence["token"]) for a in leased] == [("a", 1), ("b", 2)]
    store.close()


def test_a_moved_model_stops_at_the_step_boundary_and_the_new_owner_goes_on(
        store: StateStore, tmp_path: Path) -> None:
    log = tmp_path / "steps.log"
    run_id = queued_run(store, "m", quick_steps(log, n=2, hold="before", hold_s=1.0))
    owned = {"a": True}
    a = Runner(store, tmp_path / "runs", poll_interval=0.02, owner="a",
               worker_env={"PYTHONPATH": str(TESTS)}, owns=lambda m: owned["a"])
    assert a.schedule() == [run_id]
    _wait(lambda: any(ln.startswith(f"holding {run_id} 0") for ln in _lines(log)), "step 0")
    owned["a"] = False  # the partition moved while step 0 runs: it may finish, nothing after
    a._active[run_id].join(30)
    run = store.get_run(run_id)
    assert run is not None and run.state is RunState.RUNNING and run.next_step == 1
    assert [s.name for s in store.steps(run_id)] == ["s0"], "the finished step is recorded"
    assert not any(ln.startswith(f"start {run_id} 1") for ln in _lines(log))
    b = Runner(store, tmp_path / "runs", poll_interval=0.02, owner="b",
               worker_env={"PYTHONPATH": str(TESTS)})
    b.execute(run_id)  # a released its lease at the boundary: no wait for it to lapse
    run = store.get_run(run_id)
    assert run is not None and run.state is RunState.SUCCEEDED
    starts = [ln.split()[2] for ln in _lines(log) if ln.startswith("start")]
    assert starts == ["0", "1"], "each step ran once, across the hand-over"
    actions = [(e.action, e.actor) for e in store.list_audit(run_id=run_id)
               if e.action in ("run.leased", "run.handed_over")]
    assert actions == [("run.leased", "a"), ("run.handed_over", "a"), ("run.leased", "b")]


def test_a_lease_taken_over_kills_the_old_holders_worker(store: StateStore,
                                                         tmp_path: Path) -> None:
    log = tmp_path / "steps.log"
    run_id = queued_run(store, "m", quick_steps(log, n=1, hold="before", hold_s=60))
    a = Runner(store, tmp_path / "runs", poll_interval=0.02, owner="a", lease_ttl_s=0.6,
               worker_env={"PYTHONPATH": str(TESTS)}).start()
    try:
        _wait(lambda: any(ln.startswith(f"holding {run_id} 0") for ln in _lines(log)),
              "the step to hold")
        worker = int(next(ln for ln in _lines(log) if ln.startswith("holding")).split("pid=")[1])
        # What an instance does once a's lease lapsed (a stalled); forced here, not waited for.
        thread = a._active[run_id]
        new = store.acquire_lease(run_id, "b", ttl_s=30, force=True)
        assert new is not None and new.token == 2
        thread.join(30)
        _wait(lambda: not Path(f"/proc/{worker}").exists()
              or Path(f"/proc/{worker}/stat").read_text().split()[2] == "Z", "worker to die")
    finally:
        a.stop()
    run = store.get_run(run_id)
    assert run is not None and run.state is RunState.RUNNING and run.next_step == 0
    assert "run.lease_lost" in [e.action for e in store.list_audit(run_id=run_id)]
    assert store.acquire_lease(run_id, "b", ttl_s=30) == new, "b still holds it, token 2"
