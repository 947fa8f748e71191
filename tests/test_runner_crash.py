"""kill -9 of the process running the runner during each step of a run; every restart resumes
from the right step, and no step's effect is applied twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon.act.runs import ActionRun, RunState, run_id_for
from daemon.act.store import StateStore

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def _wait_for(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has done all it will ever do.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def _start(db: Path, work: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(TESTS / "runner_entry.py"), str(db), str(work)],
                            cwd=ROOT)


@pytest.mark.integration
def test_kill9_during_each_step_resumes_from_that_step_and_applies_each_effect_once(
    tmp_path: Path,
) -> None:
    db, work, log = tmp_path / "state.db", tmp_path / "runs", tmp_path / "steps.log"
    holds = ["before", "after", "before"]  # where each step sleeps on its first start
    steps = tuple({"name": f"s{i}", "uses": "runner_quick_steps:record", "max_attempts": 1,
                   "params": {"log": str(log), "hold": h, "hold_s": 60}}
                  for i, h in enumerate(holds))
    store = StateStore(db)
    run_id = run_id_for("m", "p", ["ev-1"])
    store.create_run(ActionRun(id=run_id, model="m", pipeline="p", source="evaluation",
                               mode="auto", state=RunState.QUEUED, steps=steps), actor="test")

    def lines(prefix: str) -> list[str]:
        return [ln for ln in (log.read_text().splitlines() if log.exists() else [])
                if ln.startswith(prefix)]

    for i in range(len(holds)):
        proc = _start(db, work)
        _wait_for(lambda i=i: lines(f"holding {run_id} {i} "), what=f"step {i} to hold")
        worker_pid = int(lines(f"holding {run_id} {i} ")[0].split("pid=")[1])
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # The worker must die with the daemon, or it would apply effects behind our back.
        _wait_for(lambda pid=worker_pid: not _alive(pid), timeout=10, what="worker to die")
        run = store.get_run(run_id)
        assert run is not None and run.state is RunState.RUNNING
        assert run.next_step == i, "steps before the killed one are recorded as done"

    proc = _start(db, work)
    assert proc.wait(timeout=60) == 0
    run = store.get_run(run_id)
    assert run is not None and run.state is RunState.SUCCEEDED, run
    effects = (tmp_path / "effects.log").read_text().splitlines()
    assert effects == [f"effect {run_id} {i}" for i in range(3)]
    for i in range(3):
        # Each step started exactly twice: once killed, once resumed; never after it was done.
        assert len(lines(f"start {run_id} {i} ")) == 2
        assert len(lines(f"end {run_id} {i} ")) == 1
    recorded = store.steps(run_id)
    assert [r.index for r in recorded] == [0, 1, 2]
    assert all(Path(r.artifacts[f"out{r.index}"]["path"]).is_file() for r in recorded)
    resumes = [a for a in store.list_audit(run_id=run_id) if a.action == "run.resuming"]
    assert [a.evidence["next_step"] for a in resumes] == [0, 1, 2]
    store.close()
