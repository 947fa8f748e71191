"""The full detector pass for one model: column frames of the reference and current windows in,
every statistic out (latency, accuracy, a generator's serving health and reference score,
input/prediction/output drift)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

import detectors.columns as col
from detectors.accuracy import AccuracyDetector
from detectors.columns import feature_column
from detectors.config import DISTANCE_DEFAULTS, SuiteConfig, TextDrift
from detectors.drift import ColumnDriftDetector, EmbeddingDriftDetector
from detectors.generation import GenerationDetector
from detectors.latency import LatencyDetector
from detectors.quality import ReferenceScoreDetector, score_pairs
from detectors.result import DetectorResult
from detectors.stattests import is_pvalue
from detectors.text import TextFeaturizer, length_features


@dataclass(frozen=True)
class WindowData:
    """One window as columns: ``frame`` holds one row per event (the evaluator's flattening
    of InferenceEvent + joined feedback: latency_ms, status, input_text, prediction, score,
    label, ...); ``embeddings`` maps a text column to its (rows, dim) sentence embeddings.

    A text column's features may be given precomputed as ``<column>.length``, ``.words`` and
    ``.oov`` (what the evaluator computes per event on arrival); otherwise they are derived
    from the raw text here.
    """

    frame: pd.DataFrame
    embeddings: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class PreparedReference:
    """A frozen reference with what every evaluation against it reuses: the text featurizers
    (vocabularies) and the reference's derived feature arrays."""

    data: WindowData
    featurizers: Mapping[str, TextFeaturizer]
    features: Mapping[str, Mapping[str, np.ndarray]]

    def text_features(self, column: str, texts: list[str]) -> dict[str, np.ndarray]:
        """Features of new texts of ``column``, for the evaluator to compute on arrival."""
        featurizer = self.featurizers.get(column)
        return featurizer.features(texts) if featurizer else length_features(texts)


class DetectorSuite:
    """Builds every detector a ``SuiteConfig`` asks for, once; ``run`` applies them."""

    def __init__(self, config: SuiteConfig | None = None) -> None:
        self.config = config = config or SuiteConfig()
        lat = self.latency_config = config.task_latency()
        self.latency = LatencyDetector(lat.p50_ms, lat.p95_ms, lat.p99_ms, lat.error_rate_max,
                                       lat.min_samples) if lat.enabled and (
            lat.p50_ms, lat.p95_ms, lat.p99_ms, lat.error_rate_max) != (None,) * 4 else None
        acc = config.accuracy
        floors = ({"mean_rating": acc.rating_floor} if config.task == "causal-lm" else
                  {"accuracy": acc.accuracy_floor, "macro_f1": acc.macro_f1_floor})
        self.accuracy = AccuracyDetector(
            config.task, {k: v for k, v in floors.items() if v is not None},
            acc.tolerance, acc.margin_z, acc.min_labels, acc.min_labels_per_segment,
            acc.segment_gap_max) if acc.enabled else None
        gen = config.generation
        self.generation = GenerationDetector(
            gen.ttft_p95_ms, gen.tpot_p95_ms, gen.truncation_rate_max,
            gen.empty_output_rate_max, gen.min_samples) if config.generation_enabled else None
        q = config.quality
        self.quality = ReferenceScoreDetector(
            q.floor, q.tolerance, q.margin_z, q.min_references) if config.quality_enabled else None
        drift = config.drift
        alpha = config.pvalue_threshold()
        self.texts = config.drift_texts() if drift.enabled else ()
        self.text_detectors: list[tuple[TextDrift, str, ColumnDriftDetector]] = []
        self.embedding_detectors: list[EmbeddingDriftDetector] = []
        for text in self.texts:
            threshold = _threshold(text.method, text.threshold, alpha)
            for feature in text.features:
                self.text_detectors.append((text, feature, ColumnDriftDetector(
                    text.column, "numerical", text.method, threshold, drift.min_samples,
                    metric=feature)))
            if text.embedding is not None:
                e = text.embedding
                self.embedding_detectors.append(EmbeddingDriftDetector(
                    text.column, e.method, e.threshold, e.dist, e.pca_components, e.max_rows,
                    drift.min_samples))
        self.column_detectors = [
            ColumnDriftDetector(c.column, c.kind, c.resolved_method,
                                _threshold(c.resolved_method, c.threshold, alpha),
                                drift.min_samples)
            for c in (config.drift_columns() if drift.enabled else ())]

    def prepare(self, reference: WindowData | pd.DataFrame) -> PreparedReference:
        """Fit the text vocabularies and score the references' answers on a frozen reference
        (once per reference, not per pass)."""
        data = _window(reference)
        if self.quality is not None and col.REFERENCE_SCORE not in data.frame:
            frame = data.frame.assign(**{col.REFERENCE_SCORE: self.reference_scores(data.frame)})
            data = WindowData(frame, data.embeddings)
        featurizers: dict[str, TextFeaturizer] = {}
        features: dict[str, dict[str, np.ndarray]] = {}
        for text in self.texts:
            precomputed = _precomputed(data.frame, text)
            if precomputed is not None:
                features[text.column] = precomputed
            elif text.column in data.frame:
                texts = data.frame[text.column].astype(str).tolist()
                if "oov" in text.features:
                    featurizers[text.column] = TextFeaturizer(texts)
                    features[text.column] = featurizers[text.column].reference_features(texts)
                else:
                    features[text.column] = length_features(texts)
        return PreparedReference(data, featurizers, features)

    def run(self, reference: PreparedReference | WindowData | pd.DataFrame,
            current: WindowData | pd.DataFrame) -> tuple[DetectorResult, ...]:
        """The full pass. A column absent from either window gives INSUFFICIENT results
        (visible, never a breach), so one config fits windows before their labels arrive."""
        ref = reference if isinstance(reference, PreparedReference) else self.prepare(reference)
        cur = _window(current)
        rf, cf = ref.data.frame, cur.frame
        results: list[DetectorResult] = []
        if self.latency is not None:
            lat = self.latency_config
            latency = _column(cf, lat.column, np.float64)
            status = cf[lat.status_column].to_numpy() if lat.status_column in cf else None
            results += self.latency.evaluate(latency, None if status is None else status == "error")
        if self.accuracy is not None:
            results += self._accuracy(rf, cf)
        if self.generation is not None:
            status = cf[col.STATUS].to_numpy() if col.STATUS in cf else None
            failed = None if status is None else status == "error"
            results += self.generation.evaluate(
                _aligned(cf, col.LATENCY_MS, np.float64), _aligned(cf, col.TTFT_MS, np.float64),
                _aligned(cf, col.TOKENS_OUT, np.float64), _aligned(cf, col.FINISH_REASON, object),
                _aligned(cf, col.OUTPUT_TEXT, object), failed)
        if self.quality is not None:
            current_scores = (_column(cf, col.REFERENCE_SCORE, np.float64)
                              if col.REFERENCE_SCORE in cf else self.reference_scores(cf))
            results += self.quality.evaluate(_column(rf, col.REFERENCE_SCORE, np.float64),
                                             current_scores)
        current_features = {t.column: self.current_features(ref, cf, t) for t in self.texts}
        for text, feature, detector in self.text_detectors:
            ref_values = ref.features.get(text.column, {}).get(feature)
            cur_values = current_features[text.column].get(feature)
            results.append(detector.evaluate(_or_empty(ref_values), _or_empty(cur_values)))
        for emb in self.embedding_detectors:
            dim = _dim(ref.data.embeddings, cur.embeddings, emb.column)
            results.append(emb.evaluate(
                ref.data.embeddings.get(emb.column, np.empty((0, dim))),
                cur.embeddings.get(emb.column, np.empty((0, dim)))))
        for detector in self.column_detectors:
            kind = np.float64 if detector.kind == "numerical" else object
            results.append(detector.evaluate(_column(rf, detector.column, kind),
                                             _column(cf, detector.column, kind)))
        return tuple(results)

    def _accuracy(self, rf: pd.DataFrame, cf: pd.DataFrame) -> tuple[DetectorResult, ...]:
        assert self.accuracy is not None
        acc = self.config.accuracy
        ref: tuple[np.ndarray, np.ndarray | None]
        cur: tuple[np.ndarray, np.ndarray | None]
        if self.config.task == "causal-lm":
            ref = (_column(rf, acc.rating_column, np.float64), None)
            cur = (_column(cf, acc.rating_column, np.float64), None)
        else:
            ref = _labels(rf, acc.label_column, acc.prediction_column)
            cur = _labels(cf, acc.label_column, acc.prediction_column)
        seg = acc.segment_column
        return self.accuracy.evaluate(
            ref, cur,
            cf[seg].to_numpy() if seg and seg in cf else None,
            rf[seg].to_numpy() if seg and seg in rf else None)

    def reference_scores(self, frame: pd.DataFrame) -> np.ndarray:
        """Per row, the output's score against the feedback's reference (NaN without one)."""
        if col.OUTPUT_TEXT not in frame or col.REFERENCE not in frame:
            return np.full(len(frame), np.nan)
        return score_pairs(frame[col.OUTPUT_TEXT].to_numpy(dtype=object),
                           frame[col.REFERENCE].to_numpy(dtype=object), self.config.quality.scorer)

    @staticmethod
    def current_features(ref: PreparedReference, cf: pd.DataFrame,
                         text: TextDrift) -> dict[str, np.ndarray]:
        """The text column's features in the current frame: precomputed columns if all are
        there, else derived from the raw text (empty if neither is present)."""
        precomputed = _precomputed(cf, text)
        if precomputed is not None:
            return precomputed
        if text.column not in cf:
            return {}
        return ref.text_features(text.column, cf[text.column].astype(str).tolist())


def _threshold(method: str, explicit: float | None, alpha: float) -> float:
    """The configured threshold, else the Bonferroni alpha (p-values) or the method's default
    distance."""
    if explicit is not None:
        return explicit
    return alpha if is_pvalue(method) else DISTANCE_DEFAULTS[method]


def _window(data: WindowData | pd.DataFrame) -> WindowData:
    return data if isinstance(data, WindowData) else WindowData(data)


def _column(frame: pd.DataFrame, name: str, dtype: type) -> np.ndarray:
    """The column as an array; an absent column reads as empty (so: too few samples)."""
    if name not in frame:
        return np.empty(0, dtype=dtype)
    return frame[name].to_numpy(dtype=dtype)


def _aligned(frame: pd.DataFrame, name: str, dtype: type) -> np.ndarray:
    """The column as an array, or one "not reported" value per row when it is absent."""
    if name in frame:
        return frame[name].to_numpy(dtype=dtype)
    return np.full(len(frame), np.nan if dtype is np.float64 else None, dtype=dtype)


def _labels(frame: pd.DataFrame, truth: str, prediction: str) -> tuple[np.ndarray, np.ndarray]:
    """(truth, prediction); both empty unless both columns are there."""
    if truth not in frame or prediction not in frame:
        return np.empty(0, dtype=object), np.empty(0, dtype=object)
    return frame[truth].to_numpy(dtype=object), frame[prediction].to_numpy(dtype=object)


def _precomputed(frame: pd.DataFrame, text: TextDrift) -> dict[str, np.ndarray] | None:
    names = {f: feature_column(text.column, f) for f in text.features}
    if not all(n in frame for n in names.values()):
        return None
    return {f: frame[n].to_numpy(dtype=np.float64) for f, n in names.items()}


def _or_empty(values: np.ndarray | None) -> np.ndarray:
    return np.empty(0) if values is None else values


def _dim(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], column: str) -> int:
    for side in (a, b):
        if column in side:
            return int(np.shape(side[column])[1])
    return 0
