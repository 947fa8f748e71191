"""The detector pass, where it runs (the evaluation worker process, or a thread when
``evaluation.isolation`` is ``thread``): window copies fed by deltas, prepared references,
per-row caches (``pass_caches``), the suite, breach reports, and the Evidently workspace.

Only this side imports the detector suite's heavy parts (Evidently, the sentence encoder).
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import detectors.columns as col
from daemon.monitor.config import EvaluationConfig
from daemon.monitor.deltas import PassDelta, VersionDelta
from daemon.monitor.evaluation import Evaluation
from daemon.monitor.pass_caches import (
    EmbeddingCache,
    ReferenceScoreCache,
    TextFeatureCache,
    encoder_factory,
)
from daemon.monitor.window_copy import WindowCopy, reference_snapshot
from detectors.config import SuiteConfig
from lifeguard.files import atomic_write

log = logging.getLogger(__name__)

REPORT_EVERY_S = 600.0


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


@dataclass
class VersionState:
    """One version on the evaluation side: its window copy, prepared reference and caches."""

    window: WindowCopy = field(default_factory=WindowCopy)
    prepared: Any = None  # detectors.suite.PreparedReference
    features: TextFeatureCache | None = None
    scores: ReferenceScoreCache | None = None  # a generator's answers vs their references
    reported: float | None = None  # monotonic time of the last breach report


@dataclass
class ModelPasses:
    spec: ModelSpec
    suite: Any  # detectors.suite.DetectorSuite (imported here only: evidently is slow)
    embeddings: EmbeddingCache | None
    versions: dict[str, VersionState] = field(default_factory=dict)


EvaluationSink = Callable[[Evaluation], None]
ReportSink = Callable[[Evaluation, Any], None]  # an evaluation and its report's Evidently snapshot


class PassEngine:
    """Applies each pass's deltas, then judges every version in it. ``sinks`` get each
    evaluation and ``report_sinks`` each breach report's Evidently snapshot, here where
    Evidently is loaded (the Evidently workspace is both)."""

    def __init__(self, models: dict[str, ModelPasses], sinks: Iterable[EvaluationSink] = (),
                 report_sinks: Iterable[ReportSink] = ()) -> None:
        self.models = models
        self.sinks = list(sinks)
        self.report_sinks = list(report_sinks)

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
                self._publish(self.sinks, evaluation)
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
            state.prepared = model.suite.prepare(self.window(model, reference))
            state.features = TextFeatureCache(state.prepared, 2 * len(current) + 1000)
        if state.prepared is None or state.features is None:
            raise RuntimeError(f"no prepared reference for version {delta.version}")
        current = state.features.add_columns(current, model.suite.texts)
        if getattr(model.suite, "quality", None) is not None:
            if state.scores is None:
                state.scores = ReferenceScoreCache(model.suite, 2 * len(current) + 1000)
            current = state.scores.add_column(current)
        results = model.suite.run(state.prepared, self.window(model, current))
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
    def window(model: ModelPasses, frame: pd.DataFrame) -> Any:
        """The suite's input: ``frame`` and a sample of embeddings of every text column with
        embedding drift (the prompt, and a generator's answer), each text embedded once."""
        from detectors.suite import WindowData

        embeddings: dict[str, np.ndarray] = {}
        sample = model.spec.evaluation.embedding_sample
        if model.embeddings is None or not sample:
            return WindowData(frame, embeddings)
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

    def _report(self, model: ModelPasses, version: str, reference: Any,
                current: pd.DataFrame, evaluation: Evaluation) -> None:
        report_dir, name = model.spec.report_dir, model.spec.name
        if report_dir is None:
            return
        try:
            from detectors.report import drift_report, render_html

            snapshot = drift_report(model.suite, reference, self.window(model, current),
                                    timestamp=datetime.fromtimestamp(evaluation.ts, UTC),
                                    name=f"{name} v{version}: {evaluation.id}",
                                    metadata={"evaluation_id": evaluation.id},
                                    tags=["breach-report", f"version:{version}"])
            path = atomic_write(report_dir / name / f"{evaluation.id}.html",
                                render_html(snapshot))
            log.info("breach report for %s v%s: %s", name, version, path)
        except Exception:
            log.exception("rendering the breach report for %s failed", evaluation.id)
            return
        self._publish(self.report_sinks, evaluation, snapshot)

    @staticmethod
    def _publish(sinks: Iterable[Callable[..., None]], evaluation: Evaluation,
                 *extra: Any) -> None:
        """A failing sink is logged: it never fails the pass (the daemon still gets it)."""
        for sink in sinks:
            try:
                sink(evaluation, *extra)
            except Exception:
                log.exception("evaluation sink failed for %s", evaluation.id)


def build_engine(specs: Iterable[ModelSpec]) -> PassEngine:
    """Suites for every model; one encoder (and cache) per distinct encoder directory, loaded
    on first use; the Evidently workspace of the models that name one."""
    from detectors.suite import DetectorSuite

    caches: dict[Path | None, EmbeddingCache] = {}
    models = {}
    workspaces: dict[str, Path] = {}
    for spec in specs:
        if spec.embedding_model not in caches:
            caches[spec.embedding_model] = EmbeddingCache(encoder_factory(spec.embedding_model))
        models[spec.name] = ModelPasses(spec, DetectorSuite(spec.suite),
                                        caches[spec.embedding_model])
        if spec.evaluation.evidently_workspace is not None:
            workspaces[spec.name] = spec.evaluation.evidently_workspace
    if not workspaces:
        return PassEngine(models)
    # Here, not on the daemon's side: both the per-pass snapshot and the workspace writer
    # import Evidently, which stays out of the ingest process.
    from daemon.monitor.evidently_workspace import EvidentlyWorkspaceSink

    evidently = EvidentlyWorkspaceSink(workspaces)
    return PassEngine(models, [evidently], [evidently.add_report])


def warm_up() -> None:
    """Importing Evidently takes seconds: pay it before the first pass, not in it."""
    try:
        from detectors.stattests import load_evidently

        load_evidently()
    except Exception:  # the first pass will report it properly
        log.debug("warming evidently up failed", exc_info=True)
