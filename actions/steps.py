"""The step registry the runner calls by name, and a plain in-process pipeline (for tests, the
bench and the CLI): each step's ``model_dir`` feeds the next one's input."""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Sequence

from actions import evaluate, export, fine_tune, prune, quantize
from actions.context import StepContext, StepResult
from actions.errors import ActionError, ResourceExhausted

Step = Callable[[StepContext], StepResult]

STEPS: dict[str, Step] = {
    "fine_tune": fine_tune.run,
    "evaluate": evaluate.run,
    "export_onnx": export.run,
    "quantize": quantize.run,
    "prune": prune.run,
}

DEFAULT_PIPELINE = ("fine_tune", "evaluate", "export_onnx", "quantize")


def run_step(name: str, ctx: StepContext) -> StepResult:
    """Run one registered step, recording its outcome and wall time on ``ctx.metrics``."""
    if name not in STEPS:
        raise ValueError(f"unknown step {name!r}; known: {sorted(STEPS)}")
    started = time.perf_counter()
    outcome = "error"
    try:
        try:
            result = STEPS[name](ctx)
        except (MemoryError, OSError, RuntimeError) as exc:
            if not _out_of_resources(exc):
                raise
            raise ResourceExhausted(f"{name}: {exc}") from exc
        outcome = "cached" if result.cached else "done"
        return result
    except ActionError as exc:
        outcome = "retryable" if exc.retryable else "failed"
        raise
    finally:
        if ctx.metrics is not None:
            ctx.metrics.finish(name, outcome, time.perf_counter() - started)


def _out_of_resources(exc: BaseException) -> bool:
    """Host or GPU memory, or disk, ran out: the machine's state, worth a retry later."""
    if isinstance(exc, MemoryError):
        return True
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.ENOMEM)
    return type(exc).__name__ == "OutOfMemoryError"  # torch's, without importing torch here


def run_pipeline(ctx: StepContext, names: Sequence[str] = DEFAULT_PIPELINE) -> list[StepResult]:
    """Run ``names`` in order in this process; a failing step (a failed gate) raises and stops
    the pipeline, so nothing after it runs."""
    results = []
    for name in names:
        result = run_step(name, ctx)
        results.append(result)
        ctx = ctx.with_model(result.model_dir)
    return results
