"""The evaluator, ingest side: cuts each model's window deltas, has a backend run the pass (an
evaluation worker process, or a thread), and publishes the outcome: gauges, counters, the lag
per model, and the sinks (the policy). Scheduling lives in ``scheduler``, the pass itself in
``detector_pass``; with process isolation nothing here imports Evidently or the encoder.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from daemon.monitor.config import EvaluatorConfig
from daemon.monitor.deltas import Cursor, PassDelta
from daemon.monitor.detector_pass import ModelSpec, PassEngine, PassOutcome
from daemon.monitor.evaluation import Evaluation
from daemon.monitor.evaluation_worker import WorkerLost, WorkerProcess
from daemon.monitor.scheduler import PassScheduler
from daemon.monitor.window_store import WindowStore
from detectors.result import Verdict

log = logging.getLogger(__name__)


class Backend(Protocol):
    def ensure(self) -> object: ...

    def run(self, delta: PassDelta, timeout: float) -> list[PassOutcome]: ...

    def kill(self) -> None: ...

    def close(self) -> None: ...


class ThreadBackend:
    """Passes in the daemon's own process (``evaluation.isolation: thread``)."""

    def __init__(self, specs: Sequence[ModelSpec]) -> None:
        self.specs = list(specs)
        self._engine: PassEngine | None = None

    def ensure(self) -> None:
        if self._engine is None:
            from daemon.monitor.detector_pass import build_engine, warm_up

            self._engine = build_engine(self.specs)
            warm_up()

    def run(self, delta: PassDelta, timeout: float) -> list[PassOutcome]:
        self.ensure()
        assert self._engine is not None
        return self._engine.run(delta)

    def kill(self) -> None:
        """A thread cannot be killed: the pass in flight finishes."""

    def close(self) -> None:
        self._engine = None


@dataclass
class Lane:
    """One backend and the models pinned to it; ``cursors`` say what the backend holds."""

    backend: Backend
    lock: threading.Lock = field(default_factory=threading.Lock)
    cursors: dict[str, dict[str, Cursor]] = field(default_factory=dict)
    forget: dict[str, set[str]] = field(default_factory=dict)  # model -> live versions


class Evaluator:
    """Runs passes when the scheduler says a model is due, one per lane at a time."""

    def __init__(self, windows: WindowStore, specs: dict[str, ModelSpec],
                 registry: CollectorRegistry,
                 sinks: Iterable[Callable[[Evaluation], None]] = (),
                 settings: EvaluatorConfig | None = None) -> None:
        self.windows = windows
        self.specs = specs
        self.sinks = list(sinks)
        self.settings = settings = settings or EvaluatorConfig()
        self.latest: dict[tuple[str, str], Evaluation] = {}
        self.lock = threading.Lock()
        self._forget_lock = threading.Lock()
        self._closing = False
        count = max(1, min(settings.workers, len(specs)))
        self.lane_of = {name: i % count for i, name in enumerate(specs)}
        pinned = [[s for n, s in specs.items() if self.lane_of[n] == i] for i in range(count)]
        self.lanes = [Lane(WorkerProcess(p, settings.start_timeout, f"lifeguard-evaluator-{i}",
                                         settings.nice)
                           if settings.isolation == "process" else ThreadBackend(p))
                      for i, p in enumerate(pinned)]
        self.scheduler = PassScheduler(
            self.run_model, {n: (s.evaluation.interval, self.lane_of[n])
                             for n, s in specs.items()}, count)
        self.passes = Counter("lifeguard_evaluations", "Evaluation passes, by outcome.",
                              ["model", "outcome"], registry=registry)
        self.failures = Counter("lifeguard_evaluation_failures",
                                "Passes that failed: crash or timeout (worker killed and the "
                                "pass retried), error (a detector raised), start.",
                                ["model", "reason"], registry=registry)
        self.duration = Histogram("lifeguard_evaluation_duration_seconds",
                                  "Wall time of one model version's detector pass.", ["model"],
                                  buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                                           10, 30), registry=registry)
        self.cpu = Counter("lifeguard_evaluation_cpu_seconds",
                           "CPU time of the thread that ran each detector pass (in the "
                           "worker process, or the daemon's lane thread), by model.",
                           ["model"], registry=registry)
        registry.register(_ResultCollector(self))

    # -- lifetime ---------------------------------------------------------------------------

    def start(self) -> None:
        self.scheduler.start()
        if self.settings.isolation == "thread":  # import Evidently now, not in a pass
            from daemon.monitor.detector_pass import warm_up

            threading.Thread(target=warm_up, daemon=True, name="evaluation-warm-up").start()
            return
        for lane in self.lanes:  # workers import and warm up now, not in the first pass
            threading.Thread(target=self._warm, args=(lane,), daemon=True,
                             name="evaluation-warm-up").start()

    def _warm(self, lane: Lane) -> None:
        with lane.lock:
            if self._closing:
                return
            try:
                lane.backend.ensure()
            except Exception as exc:  # the first pass starts it again and counts it
                if self._closing:  # stopped while it started (a Ctrl-C reaches it too)
                    log.debug("evaluation backend stopped while starting: %r", exc)
                    return
                log.warning("starting an evaluation backend failed", exc_info=True)

    def stop(self) -> None:
        """No new passes; a pass in flight in a worker is killed rather than awaited."""
        self._closing = True
        for lane in self.lanes:
            if lane.lock.acquire(blocking=False):
                lane.lock.release()
            else:
                lane.backend.kill()
        self.scheduler.stop()
        for lane in self.lanes:
            with lane.lock:
                lane.backend.close()

    def nudge(self) -> None:
        """Called by the ingest sink: passes are due for models with enough new events."""
        for name, spec in self.specs.items():
            every = spec.evaluation.every_events
            windows = self.windows.get(name)
            if every and windows is not None and windows.new_events >= every:
                windows.take_new_events()
                self.scheduler.request(name)

    def prune(self) -> None:
        """Forget what belongs to versions no longer in any window, and to models whose
        partition this instance released: gauges now, the backend's copies on its next pass.
        Never waits for a pass (it runs on the ingest thread)."""
        for name in self.specs:
            windows = self.windows.get(name)
            live = set() if windows is None else windows.versions()
            with self._forget_lock:
                self.lanes[self.lane_of[name]].forget[name] = live
            self._forget_latest(name, live)

    def _forget_latest(self, name: str, live: set[str]) -> None:
        with self.lock:
            for key in [k for k in self.latest if k[0] == name and k[1] not in live]:
                del self.latest[key]  # a version that left the windows leaves the gauges too

    # -- one pass ---------------------------------------------------------------------------

    def run_model(self, name: str) -> list[Evaluation]:
        """Evaluate every version of ``name`` that has a reference and enough events. A pass
        whose worker crashes or hangs is counted and retried on a fresh worker."""
        spec = self.specs.get(name)
        windows = self.windows.get(name)
        if spec is None or windows is None:
            return []
        lane = self.lanes[self.lane_of[name]]
        with lane.lock:
            if self._closing:
                return []  # stopping: start no worker
            for _ in range(self.settings.retries + 1):
                with self._forget_lock:
                    forget, lane.forget = lane.forget, {}
                for model, live in forget.items():
                    cursors = lane.cursors.get(model, {})
                    for version in [v for v in cursors if v not in live]:
                        del cursors[version]
                delta = windows.pass_delta(spec.evaluation.min_events,
                                           lane.cursors.setdefault(name, {}))
                if delta is None or (not delta.versions and not forget):
                    self._forget_latest(name, set() if delta is None else delta.live)
                    return []
                try:
                    outcomes = lane.backend.run(dataclasses.replace(delta, forget=forget),
                                                self.settings.pass_timeout)
                    break
                except WorkerLost as lost:
                    lane.cursors.clear()  # a new worker holds nothing: send everything
                    if self._closing:
                        return []
                    self.failures.labels(name, lost.reason).inc()
                    log.warning("pass of %s lost (%s); retrying", name, lost)
            else:
                return []
            self._forget_latest(name, delta.live)
            return self._publish(name, lane, outcomes)

    def _publish(self, name: str, lane: Lane, outcomes: list[PassOutcome]) -> list[Evaluation]:
        out = []
        for outcome in outcomes:
            evaluation = outcome.evaluation
            if evaluation is None:
                self.passes.labels(name, "error").inc()
                self.failures.labels(name, "error").inc()
                lane.cursors.get(name, {}).pop(outcome.version, None)  # it starts over
                log.error("evaluation of %s version %s failed:\n%s", name, outcome.version,
                          outcome.error)
                continue
            self.duration.labels(name).observe(outcome.seconds)
            self.cpu.labels(name).inc(outcome.cpu_seconds)
            self.passes.labels(name, "breach" if evaluation.breached else "ok").inc()
            with self.lock:
                self.latest[(name, evaluation.model_version)] = evaluation
            for sink in self.sinks:
                try:
                    sink(evaluation)
                except Exception:
                    log.exception("evaluation sink failed for %s", evaluation.id)
            out.append(evaluation)
        return out


class _ResultCollector(Collector):
    """The latest result of every detector, per model version: statistic, threshold, verdict;
    and each model's evaluation lag."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator

    def collect(self) -> Iterable[Metric]:
        labels = ["model", "version", "detector", "metric", "column", "segment"]
        statistic = GaugeMetricFamily("lifeguard_detector_statistic",
                                      "The detector's statistic on the current window.",
                                      labels=labels)
        threshold = GaugeMetricFamily("lifeguard_detector_threshold",
                                      "The threshold the statistic is judged against.",
                                      labels=labels)
        breached = GaugeMetricFamily("lifeguard_detector_breached",
                                     "1 when the statistic crosses its threshold.", labels=labels)
        samples = GaugeMetricFamily("lifeguard_detector_samples",
                                    "Rows the detector saw, per window.",
                                    labels=[*labels, "window"])
        last = GaugeMetricFamily("lifeguard_last_evaluation_timestamp_seconds",
                                 "Event time of the newest row in the last evaluated window.",
                                 labels=["model", "version"])
        lag = GaugeMetricFamily("lifeguard_evaluation_lag_seconds",
                                "Seconds since a pass of the model became due and was not yet "
                                "done (0: none is waiting).", labels=["model"])
        with self.evaluator.lock:
            latest = list(self.evaluator.latest.values())
        for evaluation in latest:
            last.add_metric([evaluation.model, evaluation.model_version], evaluation.ts)
            for r in evaluation.results:
                values = [evaluation.model, evaluation.model_version, r.detector, r.metric,
                          r.column or "", r.segment or ""]
                if r.statistic is not None:
                    statistic.add_metric(values, r.statistic)
                threshold.add_metric(values, r.threshold)
                breached.add_metric(values, 1.0 if r.verdict is Verdict.BREACH else 0.0)
                samples.add_metric([*values, "reference"], r.n_reference)
                samples.add_metric([*values, "current"], r.n_current)
        for model, seconds in sorted(self.evaluator.scheduler.lag().items()):
            lag.add_metric([model], seconds)
        yield from (statistic, threshold, breached, samples, last, lag)

    def describe(self) -> Iterable[Metric]:
        return []
