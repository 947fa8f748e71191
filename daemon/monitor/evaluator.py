"""The evaluator: an APScheduler job per model runs its detectors on (reference, current).

A pass publishes every statistic (not only the verdict) as gauges, stores the evaluation with
its evidence, hands it to the policy, and renders the full Evidently report only on a breach.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import detectors.columns as col
from daemon.monitor.config import EvaluationConfig
from daemon.monitor.evaluation import Evaluation
from daemon.monitor.window_store import WindowStore
from daemon.monitor.windows import RowsSnapshot
from detectors.columns import feature_column
from detectors.result import Verdict
from lifeguard.files import atomic_write

log = logging.getLogger(__name__)

REPORT_EVERY_S = 600.0


class Encoder(Protocol):
    def embed(self, texts: list[str]) -> np.ndarray: ...


@dataclass
class ModelEvaluation:
    """What the evaluator needs for one model: its detector suite and cadence."""

    suite: Any  # detectors.suite.DetectorSuite (imported lazily: evidently is slow to import)
    config: EvaluationConfig
    embeddings: EmbeddingCache | None = None  # shared by models that name the same encoder
    report_dir: Path | None = None  # breach reports go to <report_dir>/<model>/
    prepared: dict[str, tuple[int, Any]] = field(default_factory=dict)  # version -> (rows, ref)
    features: dict[str, TextFeatureCache] = field(default_factory=dict)  # version -> cache
    scores: dict[str, ReferenceScoreCache] = field(default_factory=dict)  # version -> cache


class TextFeatureCache:
    """Per-row text features (length, words, OOV share against one frozen reference) by
    request_id: a row is featurized on its first pass only, so a pass over a 10k window
    costs what its new rows cost."""

    def __init__(self, prepared: Any, capacity: int) -> None:
        self.prepared = prepared
        self.capacity = capacity
        self._rows: dict[str, OrderedDict[str, tuple[float, ...]]] = {}
        self._names: dict[str, list[str]] = {}  # column -> the feature names, in tuple order

    def add_columns(self, frame: pd.DataFrame, columns: Iterable[Any]) -> pd.DataFrame:
        """Adds ``<column>.<feature>`` columns to ``frame`` (in place; it is a fresh frame)."""
        ids = frame[col.REQUEST_ID].tolist()
        for text in columns:
            if text.column not in frame:
                continue
            cache = self._rows.setdefault(text.column, OrderedDict())
            texts = frame[text.column].tolist()
            missing = [i for i, rid in enumerate(ids)
                       if rid not in cache and isinstance(texts[i], str)]
            if missing:
                new = self.prepared.text_features(text.column, [texts[i] for i in missing])
                order = self._names.setdefault(text.column, list(new))
                for j, i in enumerate(missing):
                    cache[ids[i]] = tuple(float(new[n][j]) for n in order)
                while len(cache) > self.capacity:
                    cache.popitem(last=False)
            names = self._names.get(text.column)
            if names is None:
                continue  # no text seen yet: the suite reports too few samples
            nan = (float("nan"),) * len(names)
            rows = [cache.get(rid, nan) for rid in ids]
            values = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(names))
            for k, name in enumerate(names):
                frame[feature_column(text.column, name)] = values[:, k]
        return frame


class ReferenceScoreCache:
    """Each answer's score against its reference, by request_id: ROUGE-L is pure Python, so a
    pair is scored once (when its reference has joined), not on every pass."""

    def __init__(self, suite: Any, capacity: int) -> None:
        self.suite = suite
        self.capacity = capacity
        self._scores: OrderedDict[str, float] = OrderedDict()

    def add_column(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Adds the ``reference_score`` column to ``frame`` (in place; it is a fresh frame)."""
        ids = frame[col.REQUEST_ID].tolist()
        refs = frame[col.REFERENCE].tolist()
        missing = [i for i, rid in enumerate(ids)
                   if rid not in self._scores and isinstance(refs[i], str)]
        if missing:
            new = self.suite.reference_scores(frame.iloc[missing])
            for i, score in zip(missing, new, strict=True):
                self._scores[ids[i]] = float(score)
            while len(self._scores) > self.capacity:
                self._scores.popitem(last=False)
        frame[col.REFERENCE_SCORE] = np.asarray(
            [self._scores.get(rid, np.nan) if isinstance(ref, str) else np.nan
             for rid, ref in zip(ids, refs, strict=True)], dtype=np.float64)
        return frame


class EmbeddingCache:
    """Embeddings by (column, request_id), bounded: each text is embedded once, not once per
    pass."""

    def __init__(self, encoder_factory: Callable[[], Encoder], capacity: int = 50_000) -> None:
        self._factory = encoder_factory
        self._encoder: Encoder | None = None
        self._cache: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self.capacity = capacity

    def embed(self, ids: Sequence[Hashable], texts: list[str]) -> np.ndarray:
        missing = [(i, t) for i, t in zip(ids, texts, strict=True) if i not in self._cache]
        if missing:
            if self._encoder is None:
                self._encoder = self._factory()
            vectors = self._encoder.embed([t for _, t in missing])
            for (rid, _), vector in zip(missing, vectors, strict=True):
                self._cache[rid] = vector
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return np.stack([self._cache[i] for i in ids]) if ids else np.empty((0, 0), np.float32)


class Evaluator:
    """Runs passes on a schedule (and after every N new events), never overlapping itself."""

    def __init__(self, windows: WindowStore, models: dict[str, ModelEvaluation],
                 registry: CollectorRegistry,
                 sinks: Iterable[Callable[[Evaluation], None]] = (),
                 report_sinks: Iterable[Callable[[Evaluation, Any], None]] = ()) -> None:
        self.windows = windows
        self.models = models
        self.sinks = list(sinks)
        self.report_sinks = list(report_sinks)  # get each breach report's Evidently snapshot
        self.latest: dict[tuple[str, str], Evaluation] = {}
        self._scheduler: Any = None
        self._reported: dict[tuple[str, str], float] = {}  # (model, version) -> report time
        self.lock = threading.Lock()
        self.passes = Counter("lifeguard_evaluations", "Evaluation passes, by outcome.",
                              ["model", "outcome"], registry=registry)
        self.duration = Histogram("lifeguard_evaluation_duration_seconds",
                                  "Wall time of one model version's detector pass.", ["model"],
                                  buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                                           10, 30), registry=registry)
        registry.register(_ResultCollector(self))

    # -- scheduling -------------------------------------------------------------------------

    def start(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        self._scheduler = BackgroundScheduler(timezone="UTC")
        for name, model in self.models.items():
            interval = model.config.interval or 3600.0
            self._scheduler.add_job(self.run_model, "interval", seconds=interval, args=[name],
                                    id=f"evaluate:{name}", max_instances=1, coalesce=True,
                                    misfire_grace_time=None)
        self._scheduler.start()
        if self.models:
            # Importing evidently takes seconds: pay it now, not in the first pass.
            threading.Thread(target=_warm_up, name="evidently-warm-up", daemon=True).start()

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None

    def nudge(self) -> None:
        """Called by the ingest sink: start passes for models with enough new events."""
        scheduler = self._scheduler
        if scheduler is None:
            return
        for name, model in self.models.items():
            every = model.config.every_events
            windows = self.windows.get(name)
            if every and windows is not None and windows.new_events >= every:
                windows.take_new_events()
                job = scheduler.get_job(f"evaluate:{name}")
                if job is not None:
                    job.modify(next_run_time=datetime.now(UTC))

    # -- caches -----------------------------------------------------------------------------

    def prune(self) -> None:
        """Forget what belongs to versions no longer in any window, and to models whose
        partition this instance released: gauges, prepared references, feature caches."""
        for name in self.models:
            windows = self.windows.get(name)
            if windows is None:
                self._forget(name, set())
            else:
                self._forget(name, windows.versions())

    def _forget(self, name: str, live: set[str]) -> None:
        model = self.models[name]
        for version in [v for v in model.prepared if v not in live]:
            del model.prepared[version]
        for version in [v for v in model.features if v not in live]:
            del model.features[version]
        for version in [v for v in model.scores if v not in live]:
            del model.scores[version]
        with self.lock:
            for key in [k for k in self.latest if k[0] == name and k[1] not in live]:
                del self.latest[key]  # a version that left the windows leaves the gauges too
            for key in [k for k in self._reported if k[0] == name and k[1] not in live]:
                del self._reported[key]

    # -- one pass ---------------------------------------------------------------------------

    def run_model(self, name: str) -> list[Evaluation]:
        """Evaluate every version of ``name`` that has a reference and enough events."""
        model = self.models.get(name)
        windows = self.windows.get(name)
        if model is None or windows is None:
            return []
        features = windows.settings.window.features
        cut = windows.pass_input(model.config.min_events,
                                 {v: size for v, (size, _) in model.prepared.items()})
        if cut is None:
            return []  # rebuilding from replayed history: judge nothing yet
        self._forget(name, cut.live)
        # Frames are built here, after the windows' lock was released.
        frames = [(p.version, p.reference_size,
                   p.reference.frame(features) if isinstance(p.reference, RowsSnapshot)
                   else p.reference, p.current.frame(features)) for p in cut.versions]
        out = []
        for version, size, reference, current in frames:
            try:
                out.append(self._evaluate(name, model, version, size, reference, current,
                                          cut.offset))
            except Exception:
                self.passes.labels(name, "error").inc()
                log.exception("evaluation of %s version %s failed", name, version)
        return out

    def _evaluate(self, name: str, model: ModelEvaluation, version: str, reference_size: int,
                  reference: pd.DataFrame | None, current: pd.DataFrame,
                  offset: int) -> Evaluation:
        """One version's pass; ``reference`` is None when the prepared one still holds."""
        started = time.perf_counter()
        prepared = model.prepared.get(version)
        if reference is not None:
            prepared = (reference_size, model.suite.prepare(self._window(model, reference)))
            model.prepared[version] = prepared
            model.features[version] = TextFeatureCache(prepared[1], 2 * len(current) + 1000)
        assert prepared is not None
        current = model.features[version].add_columns(current, model.suite.texts)
        if getattr(model.suite, "quality", None) is not None:
            scores = model.scores.get(version)
            if scores is None:
                scores = model.scores[version] = ReferenceScoreCache(model.suite,
                                                                     2 * len(current) + 1000)
            current = scores.add_column(current)
        results = model.suite.run(prepared[1], self._window(model, current))
        ts = float(current[col.TS].max())
        evaluation = Evaluation(name, version, ts, tuple(results), offset)
        self.duration.labels(name).observe(time.perf_counter() - started)
        self.passes.labels(name, "breach" if evaluation.breached else "ok").inc()
        with self.lock:
            self.latest[(name, version)] = evaluation
        if evaluation.breached and self._report_due(name, version):
            self._report(name, model, version, prepared[1], current, evaluation)
        elif not evaluation.breached:
            self._reported.pop((name, version), None)
        for sink in self.sinks:
            try:
                sink(evaluation)
            except Exception:
                log.exception("evaluation sink failed for %s", evaluation.id)
        return evaluation

    def _report_due(self, name: str, version: str) -> bool:
        """A report when a breach begins, then at most every REPORT_EVERY_S while it lasts:
        rendering one costs many detector passes."""
        now = time.monotonic()
        last = self._reported.get((name, version))
        if last is not None and now - last < REPORT_EVERY_S:
            return False
        self._reported[(name, version)] = now
        return True

    def _window(self, model: ModelEvaluation, frame: pd.DataFrame) -> Any:
        from detectors.suite import WindowData

        embeddings: dict[str, np.ndarray] = {}
        sample = model.config.embedding_sample
        if model.embeddings is None or not sample:
            return WindowData(frame, embeddings)
        # Every text column with embedding drift: the prompt, and a generator's answer.
        for text in model.suite.texts:
            column = text.column
            if getattr(text, "embedding", None) is None or column not in frame:
                continue
            texts = frame[frame[column].notna()]
            if len(texts) > sample:
                texts = texts.iloc[np.linspace(0, len(texts) - 1, sample).astype(int)]
            embeddings[column] = model.embeddings.embed(
                [(column, rid) for rid in texts[col.REQUEST_ID].tolist()],
                texts[column].tolist())
        return WindowData(frame, embeddings)

    def _report(self, name: str, model: ModelEvaluation, version: str, reference: Any,
                current: pd.DataFrame, evaluation: Evaluation) -> None:
        if model.report_dir is None:
            return
        try:
            from detectors.report import drift_report, render_html

            snapshot = drift_report(model.suite, reference, self._window(model, current),
                                    timestamp=datetime.fromtimestamp(evaluation.ts, UTC),
                                    name=f"{name} v{version}: {evaluation.id}",
                                    metadata={"evaluation_id": evaluation.id},
                                    tags=["breach-report", f"version:{version}"])
            path = atomic_write(model.report_dir / name / f"{evaluation.id}.html",
                                render_html(snapshot))
            log.info("breach report for %s v%s: %s", name, version, path)
        except Exception:
            log.exception("rendering the breach report for %s failed", evaluation.id)
            return
        for sink in self.report_sinks:
            try:
                sink(evaluation, snapshot)
            except Exception:
                log.exception("breach report sink failed for %s", evaluation.id)


def _warm_up() -> None:
    try:
        from detectors.stattests import load_evidently

        load_evidently()
    except Exception:  # the first pass will report it properly
        log.debug("warming evidently up failed", exc_info=True)


class _ResultCollector(Collector):
    """The latest result of every detector, per model version: statistic, threshold, verdict."""

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
        yield from (statistic, threshold, breached, samples, last)

    def describe(self) -> Iterable[Metric]:
        return []
