"""One step of a run, from its first attempt to its recorded outcome.

Retryable errors and worker crashes are retried with exponential backoff up to the step's
``max_attempts`` (a step may name its own delay); anything else fails the run, fenced by the
run's lease. A step whose worker was killed at its timeout then gets the ``after_timeout``
clean-up (a deploy puts the fleet back on one version).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from daemon.act.leases import LeaseKeeper
from daemon.act.runs import ActionRun, RunState
from daemon.act.step_results import StepResults
from daemon.act.store import Fence, StateStore
from daemon.act.worker_launch import WorkerLauncher

log = logging.getLogger(__name__)

AfterTimeout = Callable[[ActionRun, str, Fence | None], None]


class StepExecutor:
    def __init__(self, store: StateStore, leases: LeaseKeeper, launcher: WorkerLauncher,
                 results: StepResults, stop: threading.Event,
                 after_timeout: AfterTimeout | None = None) -> None:
        self.store = store
        self.leases = leases
        self.launcher = launcher
        self.results = results
        self.stop = stop  # set: no further attempt, no waiting out a backoff
        self.after_timeout = after_timeout

    def run_step(self, run: ActionRun) -> bool:
        """Run step ``run.next_step`` with retries; True when the run should go on."""
        index = run.next_step
        step = run.steps[index]
        recovered = self.results.finished_before(run, index)
        if recovered is not None:  # the worker finished, the daemon died before recording it
            self.results.record(run, index, recovered, attempt=0)
            return True
        max_attempts = int(step.get("max_attempts", 1))
        for attempt in range(1, max_attempts + 1):
            outcome = self.launcher.attempt(run, index, attempt)
            result = outcome.result
            if outcome.kind == "stopped":
                return False
            self.results.observe(step["name"], outcome)
            if outcome.kind == "ok":
                self.results.record(run, index, result, attempt)
                return True  # the run loop ends a rolled-back run before the next step
            error = f"step {index} ({step['name']}) {outcome.kind}: {result.get('message', '')}"
            evidence = {"step": step["name"], "attempt": attempt, "kind": outcome.kind,
                        "error_type": result.get("type"), **result.get("evidence", {})}
            if outcome.kind in ("retryable", "crashed") and attempt < max_attempts:
                delay = result.get("delay_s")
                if delay is None:
                    backoff = float(step.get("backoff", 5.0)) * 2 ** (attempt - 1)
                    delay = min(backoff, float(step.get("max_backoff", 300.0)))
                self.store.audit("run.step_retry", "runner", run.model, run.id,
                                 {**evidence, "error": error, "retry_in_s": delay})
                if self.stop.wait(delay):
                    return False
                continue
            self.store.transition(run.id, RunState.FAILED, "runner", [RunState.RUNNING],
                                  evidence, error=error, fence=self.leases.fence(run.id))
            if outcome.kind == "timeout" and self.after_timeout is not None:
                self._clean_up_after_timeout(run, step["name"], self.after_timeout)
            return False
        return False

    def _clean_up_after_timeout(self, run: ActionRun, step: str, clean_up: AfterTimeout) -> None:
        try:
            clean_up(run, step, self.leases.fence(run.id))
        except Exception as exc:  # the run has failed already; say what is left to do
            log.exception("clean-up after %s of run %s timed out failed", step, run.id)
            self.store.audit("run.cleanup_failed", "runner", run.model, run.id,
                             {"step": step, "error": repr(exc)})
