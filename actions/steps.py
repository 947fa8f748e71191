"""The one step registry (name -> ``module:function``) that the runner's workers, the
``lifeguard step`` command and in-process pipelines resolve step names through, and the one
way to call a step: ``run_step`` (out-of-resources become retryable, metrics recorded).

Refs are strings, so importing the registry loads no torch: a worker imports only its step.
"""

from __future__ import annotations

import errno
import importlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from actions.contract import KNOWN_PARAMS, StepContext, StepResult, split_params
from actions.errors import (
    BadInput,
    PermanentStepError,
    ResourceExhausted,
    StepError,
    is_retryable,
)
from actions.settings import ActionPolicy, TrainConfig
from lifeguard.errors import IntegrityError

if TYPE_CHECKING:
    from actions.progress import ActionMetrics, Progress

Step = Callable[[StepContext], StepResult]

STEPS: dict[str, str] = {
    "fine_tune": "actions.fine_tune:run",
    "evaluate": "actions.evaluate:run",
    "export_onnx": "actions.export:run",
    "quantize": "actions.quantize:run",
    "prune": "actions.prune:run",
    "deploy": "actions.deploy_step:run",
}

DEFAULT_PIPELINE = ("fine_tune", "evaluate", "export_onnx", "quantize")

_DEPLOY_PARAMS = frozenset({"gate_scores", "trigger"})


def resolve(ref: str) -> Step:
    """A registered step name, or ``module:function`` for a step of your own (same contract)."""
    target = STEPS.get(ref, ref)
    module, sep, attr = target.partition(":")
    if not sep:
        raise BadInput(f"unknown step {ref!r}; registered: {', '.join(sorted(STEPS))}, or "
                       "`uses: module:function`")
    fn = getattr(importlib.import_module(module), attr, None)
    if not callable(fn):
        raise BadInput(f"{target}: not a callable step")
    return fn  # type: ignore[no-any-return]


def check_params(step: str, params: Mapping[str, Any]) -> None:
    """Raise ValueError naming the first param the registered ``step`` would refuse: the
    config loader and the runner call this, so a misspelled param fails before a run does."""
    if step == "deploy":
        unknown = sorted(set(params) - _DEPLOY_PARAMS)
        if unknown:
            raise ValueError(f"deploy takes no param {unknown[0]!r} (the rollout strategy and "
                             "canary settings live in `fleet.rollout`)")
        return
    policy, train, _, other = split_params(params)
    if other:
        raise ValueError(f"unknown param {sorted(other)[0]!r}; {step} takes: "
                         f"{', '.join(sorted(KNOWN_PARAMS))}")
    ActionPolicy(**policy)
    TrainConfig(**train)


def run_step(ref: str, ctx: StepContext, metrics: ActionMetrics | None = None) -> StepResult:
    """Run one step in this process (the worker calls this too): a full disk or memory
    becomes ResourceExhausted (retryable); outcome and wall time go to ``metrics``."""
    fn = resolve(ref)
    if not ctx.step:
        ctx = ctx.model_copy(update={"step": ref})
    if metrics is not None:
        ctx = ctx.model_copy(update={"progress": _both(metrics.observe, ctx.progress)})
    started = time.perf_counter()
    outcome = "error"
    try:
        try:
            result = fn(ctx)
        except (MemoryError, OSError, RuntimeError) as exc:
            if not out_of_resources(exc):
                raise
            raise ResourceExhausted(f"{ctx.step}: {exc}") from exc
        if not isinstance(result, StepResult):
            raise PermanentStepError(f"step {ref} returned {type(result).__name__}, "
                                     "not StepResult")
        outcome = step_outcome(result)
        return result
    except (StepError, IntegrityError) as exc:  # anything else is a bug: outcome error
        outcome = "retryable" if is_retryable(exc) else "failed"
        raise
    finally:
        if metrics is not None:
            metrics.finish(ctx.step, outcome, time.perf_counter() - started)


def step_outcome(result: StepResult) -> str:
    """The ``outcome`` label of lifeguard_action_steps_finished for a step that returned."""
    return "cached" if result.cached else "done"


def _both(first: Callable[[Progress], None],
          second: Callable[[Progress], None] | None) -> Callable[[Progress], None]:
    def sink(progress: Progress) -> None:
        first(progress)
        if second is not None:
            second(progress)

    return sink


def out_of_resources(exc: BaseException) -> bool:
    """Host or GPU memory, or disk, ran out: the machine's state, worth a retry later."""
    if isinstance(exc, MemoryError):
        return True
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.ENOMEM)
    return type(exc).__name__ == "OutOfMemoryError"  # torch's, without importing torch here


def run_pipeline(ctx: StepContext, names: Sequence[str] = DEFAULT_PIPELINE,
                 metrics: ActionMetrics | None = None) -> list[StepResult]:
    """Run ``names`` in order in this process, each taking the previous step's ``model``; a
    failing step (a failed gate) raises and stops the pipeline, so nothing after it runs."""
    results = []
    for index, name in enumerate(names):
        result = run_step(name, ctx.model_copy(update={"step": name, "step_index": index}),
                          metrics)
        results.append(result)
        if result.model_dir is not None:
            ctx = ctx.with_model(result.model_dir)
    return results
