"""Progress of a running step (steps done, loss) for the run's log and for Prometheus, through a
callback and a caller-owned CollectorRegistry (never the global one). In the daemon the runner
feeds ActionMetrics from each worker's result file (``metrics``: seconds, last progress)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from actions.contract import StepContext


@dataclass(frozen=True)
class Progress:
    run_id: str
    step: str  # the pipeline step: "fine_tune", "prune", ...
    current: int  # optimizer steps done
    total: int
    loss: float | None = None
    message: str = ""


class ActionMetrics:
    """Gauges and counters for action steps, registered once on the registry passed in."""

    def __init__(self, registry: CollectorRegistry):
        from prometheus_client import Counter, Gauge

        self.steps_done = Gauge(
            "lifeguard_action_train_steps", "Optimizer steps done by the running step",
            ["step"], registry=registry,
        )
        self.steps_total = Gauge(
            "lifeguard_action_train_steps_total_planned", "Optimizer steps the step will take",
            ["step"], registry=registry,
        )
        self.loss = Gauge(
            "lifeguard_action_train_loss", "Last training loss of the running step",
            ["step"], registry=registry,
        )
        self.finished = Counter(
            "lifeguard_action_steps_finished", "Steps finished, by outcome",
            ["step", "outcome"], registry=registry,
        )
        self.seconds = Gauge(
            "lifeguard_action_step_seconds", "Wall time of the step's last run",
            ["step"], registry=registry,
        )

    def observe(self, progress: Progress) -> None:
        self.steps_done.labels(progress.step).set(progress.current)
        self.steps_total.labels(progress.step).set(progress.total)
        if progress.loss is not None:
            self.loss.labels(progress.step).set(progress.loss)

    def finish(self, step: str, outcome: str, seconds: float) -> None:
        self.finished.labels(step, outcome).inc()
        self.seconds.labels(step).set(seconds)


def report(ctx: StepContext, progress: Progress) -> None:
    """Hand progress to the context's sink (a sink that raises stops the step: that is how a
    caller cancels a run)."""
    if ctx.progress is not None:
        ctx.progress(progress)
