"""Numeric features of text for drift tests: length in characters, word count, and the share of
a text's tokens unseen in the reference vocabulary."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

_TOKEN = re.compile(r"\w+")
TEXT_FEATURES = ("length", "words", "oov")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


class TextFeaturizer:
    """Vocabulary from one half of the reference texts; features of any texts against it.

    The out-of-vocabulary share of the reference must be measured out of sample: against a
    vocabulary built from the very same texts it is 0 everywhere, and every later window would
    look drifted. So the vocabulary comes from the even-indexed reference texts and
    ``reference_oov`` is measured on the odd-indexed ones, which the vocabulary never saw, just
    as it never sees current traffic.
    """

    def __init__(self, reference_texts: Sequence[str], min_count: int = 1) -> None:
        if len(reference_texts) < 2:
            raise ValueError("the reference needs at least 2 texts to build a vocabulary")
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        counts: dict[str, int] = {}
        for text in reference_texts[0::2]:
            for tok in tokens(text):
                counts[tok] = counts.get(tok, 0) + 1
        self.vocabulary = frozenset(t for t, c in counts.items() if c >= min_count)
        self.reference_oov = self.oov_share(reference_texts[1::2])

    def oov_share(self, texts: Iterable[str]) -> np.ndarray:
        """Per text, the share of its tokens not in the vocabulary (0 for a text with none)."""
        return self._oov([tokens(t) for t in texts])

    def _oov(self, tokenized: list[list[str]]) -> np.ndarray:
        known = self.vocabulary.__contains__
        out = np.zeros(len(tokenized))
        for i, toks in enumerate(tokenized):
            if toks:
                out[i] = 1.0 - sum(map(known, toks)) / len(toks)
        return out

    def features(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """``{"length", "words", "oov"}`` arrays for current texts (one value per text)."""
        tokenized = [tokens(t) for t in texts]  # once: words and oov share it
        return {
            "length": np.fromiter((len(t) for t in texts), dtype=np.float64, count=len(texts)),
            "words": np.fromiter((len(t) for t in tokenized), dtype=np.float64,
                                 count=len(texts)),
            "oov": self._oov(tokenized),
        }

    def reference_features(self, reference_texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Like ``features`` for the texts this featurizer was built from; "oov" is shorter
        (the held-out half only)."""
        return {**length_features(reference_texts), "oov": self.reference_oov}


def length_features(texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Length in characters and word count, one value per text."""
    return {
        "length": np.fromiter((len(t) for t in texts), dtype=np.float64, count=len(texts)),
        "words": np.fromiter((len(tokens(t)) for t in texts), dtype=np.float64, count=len(texts)),
    }
