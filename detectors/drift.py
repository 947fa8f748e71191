"""Drift of one column, or of one embedding matrix, between reference and current windows,
judged by an Evidently test named explicitly (see detectors.stattests)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from detectors.result import DetectorResult
from detectors.stattests import check_method, column_score, direction_of, embedding_score, is_pvalue


class ColumnDriftDetector:
    """One numerical or categorical column; ``method`` is an Evidently stattest name.

    The result's ``direction`` is "below" for p-value methods (drift when the p-value is below
    the threshold, a significance level) and "above" for distances. Missing values (NaN, None)
    are dropped first; with fewer than ``min_samples`` left on either side there is no verdict.
    """

    name = "drift"

    def __init__(self, column: str, kind: str, method: str, threshold: float,
                 min_samples: int = 200, metric: str = "distribution") -> None:
        check_method(method, kind)
        if is_pvalue(method) and not 0 < threshold < 1:
            raise ValueError(f"{method} gives a p-value: threshold must be in (0, 1), "
                             f"got {threshold}")
        if not is_pvalue(method) and not threshold > 0:
            raise ValueError(f"{method} gives a distance: threshold must be > 0, got {threshold}")
        if min_samples < 2:
            raise ValueError(f"min_samples must be >= 2, got {min_samples}")
        self.column, self.kind, self.method = column, kind, method
        self.threshold, self.min_samples, self.metric = threshold, min_samples, metric

    def evaluate(self, reference: np.ndarray, current: np.ndarray) -> DetectorResult:
        ref, cur = _present(reference, self.kind), _present(current, self.kind)
        labels = {"method": self.method, "column": self.column}
        direction = direction_of(self.method)
        if min(ref.size, cur.size) < self.min_samples:
            return DetectorResult.insufficient(self.name, self.metric, self.threshold,
                                               direction, ref.size, cur.size, **labels)
        score = column_score(self.method, self.kind, ref, cur, self.threshold)
        return DetectorResult.judge(self.name, self.metric, score.score, self.threshold,
                                    direction, ref.size, cur.size, **labels)


class EmbeddingDriftDetector:
    """Drift of sentence embeddings (rows = texts) by Evidently's distance/model/ratio/mmd.

    Every method's score breaches above the threshold. ``max_rows`` keeps evenly spaced rows
    of each side (deterministic: the same windows give the same verdict).
    """

    name = "drift"

    def __init__(self, column: str, method: str = "distance", threshold: float = 0.15,
                 dist: str = "euclidean", pca_components: int | None = None,
                 max_rows: int | None = None, min_samples: int = 200) -> None:
        if method not in ("distance", "model", "ratio", "mmd"):
            raise ValueError(f"unknown embedding drift method {method!r}")
        if not threshold > 0:
            raise ValueError(f"threshold must be > 0, got {threshold}")
        if max_rows is not None and max_rows < min_samples:
            raise ValueError(f"max_rows ({max_rows}) is below min_samples ({min_samples})")
        if min_samples < 2:
            raise ValueError(f"min_samples must be >= 2, got {min_samples}")
        self.column, self.method, self.threshold, self.dist = column, method, threshold, dist
        self.pca_components, self.max_rows, self.min_samples = pca_components, max_rows, min_samples

    @property
    def method_name(self) -> str:
        return f"embedding_{self.method}" + (f"_{self.dist}" if self.method == "distance" else "")

    def evaluate(self, reference: np.ndarray, current: np.ndarray) -> DetectorResult:
        ref, cur = _matrix(reference), _matrix(current)
        if ref.shape[1] != cur.shape[1] and min(ref.shape[0], cur.shape[0]) > 0:
            raise ValueError(f"embedding dims differ: reference {ref.shape[1]}, "
                             f"current {cur.shape[1]}")
        if self.method == "distance" and self.pca_components is None:
            # Evidently's distance method compares the two column means. Handing it the means
            # (a one-row frame each) is the same computation without pandas' reduction, which
            # costs 5x numpy's on a 10k x 384 window. A non-finite mean means a bad row: only
            # then are rows filtered (the check on every value costs as much as the mean).
            sides = [_mean_row(self._thin(ref)), _mean_row(self._thin(cur))]
        else:
            sides = [self._rows(ref), self._rows(cur)]
        (ref_rows, ref), (cur_rows, cur) = sides
        labels = {"method": self.method_name, "column": self.column}
        if min(ref_rows, cur_rows) < self.min_samples:
            return DetectorResult.insufficient(self.name, "embedding", self.threshold, "above",
                                               ref_rows, cur_rows, **labels)
        score = embedding_score(self.method, ref, cur, self.threshold, self.dist,
                                self.pca_components)
        return DetectorResult.judge(self.name, "embedding", score.score, self.threshold, "above",
                                    ref_rows, cur_rows, **labels)

    def _rows(self, emb: np.ndarray) -> tuple[int, np.ndarray]:
        emb = self._thin(emb[np.isfinite(emb).all(axis=1)])
        return emb.shape[0], emb

    def _thin(self, emb: np.ndarray) -> np.ndarray:
        if self.max_rows is None or emb.shape[0] <= self.max_rows:
            return emb
        return emb[np.linspace(0, emb.shape[0] - 1, self.max_rows).astype(np.intp)]


def _matrix(emb: np.ndarray) -> np.ndarray:
    emb = np.asarray(emb)
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (rows, dim), got shape {emb.shape}")
    return emb if emb.dtype.kind == "f" else emb.astype(np.float64)


def _mean_row(emb: np.ndarray) -> tuple[int, np.ndarray]:
    """(rows used, their mean as a 1 x dim matrix), skipping rows with NaN or infinity."""
    mean = emb.mean(axis=0) if emb.shape[0] else np.zeros(emb.shape[1])
    if not np.isfinite(mean).all():
        emb = emb[np.isfinite(emb).all(axis=1)]
        mean = emb.mean(axis=0) if emb.shape[0] else np.zeros(emb.shape[1])
    return emb.shape[0], mean[None, :]


def _present(values: np.ndarray, kind: str) -> np.ndarray:
    """Drop missing values: NaN for numbers, None/NaN for categories. Copies only when
    something is missing (the usual window has nothing to drop)."""
    if kind == "numerical":
        arr = np.asarray(values, dtype=np.float64)
        finite = np.isfinite(arr)
        return arr if finite.all() else arr[finite]
    arr = np.asarray(values, dtype=object)
    missing = pd.isna(arr)
    return arr[~missing] if missing.any() else arr
