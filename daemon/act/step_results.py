"""What a finished step leaves behind: its record in the store (artifacts with their sums and
its evidence, one fenced transaction, so a restart re-runs at most the step in flight), a
result a worker wrote before the daemon died, and the step's outcome on /metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from actions.contract import content_sha256
from actions.progress import ActionMetrics, Progress
from daemon.act.leases import LeaseKeeper
from daemon.act.runs import ActionRun, StepRecord
from daemon.act.store import StateStore
from daemon.act.worker_launch import Attempt, result_files


class StepResults:
    def __init__(self, store: StateStore, leases: LeaseKeeper, work_root: Path,
                 metrics: ActionMetrics | None) -> None:
        self.store = store
        self.leases = leases
        self.work_root = work_root
        self.metrics = metrics

    def record(self, run: ActionRun, index: int, result: dict[str, Any], attempt: int) -> None:
        """Record a finished step (one transaction); ``attempt`` 0: a recovered result."""
        step = run.steps[index]
        evidence = dict(result["evidence"])
        if attempt == 0:
            evidence["recovered_result"] = True
        record = StepRecord(index=index, name=step["name"], status=result["status"],
                            artifacts=result["artifacts"], evidence=evidence,
                            attempts=max(attempt, 1))
        self.store.complete_step(run.id, record, fence=self.leases.fence(run.id))

    def finished_before(self, run: ActionRun, index: int) -> dict[str, Any] | None:
        """A successful result a worker wrote before the daemon died, if its artifacts still
        match their sums: recording it saves re-running (say) an hour of fine-tuning."""
        for path in result_files(self.work_root / run.id, index):
            try:
                result = json.loads(path.read_text())
                if result.get("ok") and all(
                    content_sha256(Path(a["path"])) == a["sha256"]
                    for a in result["artifacts"].values()
                ):
                    return result
            except (OSError, ValueError, KeyError):
                continue  # unreadable or artifacts gone: run the step again
        return None

    def observe(self, step: str, attempt: Attempt) -> None:
        """Put what the worker reported about its step on the daemon's /metrics."""
        if self.metrics is None:
            return
        reported = attempt.result.get("metrics") or {}
        if reported.get("progress"):
            self.metrics.observe(Progress(**reported["progress"]))
        # no report: the worker crashed, timed out, or its params were refused before it ran
        outcome = reported.get("outcome") or {"permanent": "failed"}.get(attempt.kind,
                                                                           attempt.kind)
        self.metrics.finish(step, outcome, float(reported.get("seconds") or 0.0))
