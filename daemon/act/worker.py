"""The step worker: ``python -m daemon.act.worker SPEC.json`` runs one step in a fresh process, so
torch and friends load here and never in the daemon. The spec file (actions.contract.WorkerSpec)
is its only input; it writes its result file atomically.

The result says ok (with the step's result), or which kind of failure: ``permanent`` or
``retryable`` (actions.errors.is_retryable: only a RetryableStepError is retried; an integrity
failure or an unexpected exception is permanent). Either way it carries ``metrics``: the
step's outcome, wall time and last training progress, which the runner puts on /metrics.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any

from actions.contract import WorkerSpec, content_sha256
from actions.errors import RetryableStepError, StepError, is_retryable
from actions.progress import Progress
from actions.steps import run_step, step_outcome
from lifeguard.errors import IntegrityError
from lifeguard.files import atomic_write
from lifeguard.processes import die_with_parent


def die_with_daemon(parent_pid: int) -> None:
    """If the daemon is killed (even -9), this worker must not live on and act twice."""
    die_with_parent(signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def changed_artifacts(spec: WorkerSpec) -> dict[str, Any] | None:
    """Evidence of the first input artifact whose bytes changed since it was recorded."""
    for name, expected in spec.verify.items():
        try:
            actual = content_sha256(spec.context.artifacts[name])
        except FileNotFoundError:
            actual = "missing"
        if actual != expected:
            return {"artifact": name, "expected": expected, "actual": actual}
    return None


def run_spec(spec: WorkerSpec) -> dict[str, Any]:
    progress: list[Progress] = []  # the last report only

    def keep(report: Progress) -> None:
        progress[:] = [report]

    ctx = spec.context.model_copy(update={"progress": keep})
    started = time.perf_counter()

    def metrics(outcome: str) -> dict[str, Any]:
        last = asdict(progress[0]) if progress else None
        return {"step": ctx.step, "outcome": outcome, "progress": last,
                "seconds": round(time.perf_counter() - started, 3)}

    changed = changed_artifacts(spec)
    if changed is not None:
        error = IntegrityError(f"artifact {changed['artifact']!r} changed since it was produced")
        return _failure("permanent", error, changed, metrics("failed"))
    try:
        ctx.step_dir.mkdir(parents=True, exist_ok=True)
        result = run_step(spec.ref, ctx)
        return {"ok": True, **result.to_json(), "metrics": metrics(step_outcome(result))}
    except Exception as exc:
        retryable = is_retryable(exc)
        outcome = "retryable" if retryable else "failed"
        if isinstance(exc, StepError):
            evidence = exc.evidence
        elif isinstance(exc, IntegrityError):
            evidence = {}
        else:  # a bug: the traceback is the evidence (and the outcome says so, as run_step's)
            evidence, outcome = {"traceback": traceback.format_exc(limit=20)}, "error"
        delay = exc.delay_s if isinstance(exc, RetryableStepError) else None
        return _failure("retryable" if retryable else "permanent", exc, evidence,
                        metrics(outcome), delay)


def _failure(kind: str, exc: BaseException, evidence: dict[str, Any], metrics: dict[str, Any],
             delay_s: float | None = None) -> dict[str, Any]:
    return {"ok": False, "kind": kind, "type": type(exc).__name__, "message": str(exc),
            "evidence": evidence, "delay_s": delay_s, "metrics": metrics}


def main(argv: list[str]) -> int:
    spec = WorkerSpec.model_validate_json(Path(argv[0]).read_text())
    die_with_daemon(spec.parent_pid)
    result = run_spec(spec)
    # atomic: the runner sees a whole result or none
    atomic_write(spec.result_path, json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
