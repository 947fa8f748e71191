"""A small real entrypoint for crash tests: ``python runner_entry.py STATE.db WORK_ROOT``
opens the store, runs the runner until no run is queued or running, and exits 0."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from daemon.act.runner import Runner
from daemon.act.runs import RunState
from daemon.act.store import StateStore


def main(db: str, work_root: str) -> int:
    store = StateStore(db)
    tests_dir = str(Path(__file__).resolve().parent)
    runner = Runner(store, Path(work_root), poll_interval=0.05,
                    worker_env={"PYTHONPATH": tests_dir}).start()
    try:
        while store.list_runs(states=[RunState.QUEUED, RunState.RUNNING]):
            time.sleep(0.05)
    finally:
        runner.stop()
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:3]))
