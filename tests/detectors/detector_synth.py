"""Seeded demo-like traffic for detector tests: review texts from a Zipf vocabulary, sentence-
like embeddings, classifier outputs with labels, latencies and a segment field."""

from __future__ import annotations

import numpy as np
import pandas as pd

LABELS = np.array(["negative", "positive"])


class Traffic:
    """A stationary source of events; ``vocab_offset`` moves texts to unseen words."""

    def __init__(self, seed: int, vocab: int = 3000, dim: int = 384) -> None:
        self.rng = np.random.default_rng(seed)
        weights = 1.0 / np.arange(1, vocab + 1)
        self.p = weights / weights.sum()
        self.vocab = vocab
        basis_rng = np.random.default_rng(1234)  # the same "embedding space" for every source
        self.centre = basis_rng.normal(size=dim)
        self.centre /= np.linalg.norm(self.centre)
        # Anisotropic spread, like real sentence embeddings: a few strong directions.
        self.spread = basis_rng.normal(size=(32, dim)) * np.linspace(0.25, 0.02, 32)[:, None]

    def texts(self, n: int, vocab_offset: int = 0) -> list[str]:
        lengths = self.rng.integers(4, 40, size=n)
        ids = self.rng.choice(self.vocab, size=int(lengths.sum()), p=self.p) + vocab_offset
        words = np.char.add("w", ids.astype(str))
        cuts = np.cumsum(lengths)[:-1]
        return [" ".join(chunk) for chunk in np.split(words, cuts)]

    def embeddings(self, n: int, shift: float = 0.0) -> np.ndarray:
        z = (self.rng.standard_normal((n, self.spread.shape[0])) @ self.spread).astype(np.float32)
        z += 0.02 * self.rng.standard_normal(z.shape, dtype=np.float32) + self.centre
        z[:, :16] += shift  # a topic change moves many directions at once
        return z / np.linalg.norm(z, axis=1, keepdims=True)

    def frame(self, n: int, *, accuracy: float = 0.9, latency_scale: float = 20.0,
              label_share: float = 1.0, vocab_offset: int = 0) -> pd.DataFrame:
        rng = self.rng
        truth = LABELS[rng.integers(0, 2, size=n)]
        wrong = rng.random(n) > accuracy
        prediction = np.where(wrong, np.where(truth == "positive", "negative", "positive"), truth)
        score = np.clip(rng.beta(6, 2, size=n), 0.5, 1.0)
        label = np.where(rng.random(n) < label_share, truth, None)
        return pd.DataFrame({
            "input_text": self.texts(n, vocab_offset),
            "latency_ms": rng.gamma(4.0, latency_scale, size=n),
            "status": np.where(rng.random(n) < 0.005, "error", "ok"),
            "prediction": prediction,
            "score": score,
            "label": label,
            "language": rng.choice(["en", "de", "fr"], size=n),
        })


class ChatTraffic(Traffic):
    """A stationary generator: prompts, answers that mostly reproduce the corrected reference
    (``fidelity`` of its words kept), ratings, TTFT, tokens and finish reasons. ``topic_offset``
    moves prompts and answers to unseen words (a new product); ``ttft_scale`` slows the first
    token; ``truncated`` and ``empty`` are the shares of cut and empty answers."""

    def frame(self, n: int, *, fidelity: float = 0.85, rating: float = 0.8,  # type: ignore[override]
              ttft_scale: float = 60.0, truncated: float = 0.03, empty: float = 0.002,
              feedback_share: float = 0.5, topic_offset: int = 0) -> pd.DataFrame:
        rng = self.rng
        references = self.texts(n, topic_offset)
        outputs = []
        for ref in references:
            words = ref.split()
            keep = rng.random(len(words)) < fidelity
            noise = rng.choice(self.vocab, size=len(words), p=self.p) + topic_offset
            outputs.append(" ".join(w if k else f"w{x}" for w, k, x in
                                    zip(words, keep, noise, strict=True)))
        is_empty = rng.random(n) < empty
        outputs = ["" if e else o for o, e in zip(outputs, is_empty, strict=True)]
        tokens = np.array([max(len(o.split()), 1) for o in outputs], dtype=np.float64)
        ttft = rng.gamma(4.0, ttft_scale / 4.0, size=n)
        per_token = rng.gamma(8.0, 20.0 / 8.0, size=n)
        has_feedback = rng.random(n) < feedback_share
        return pd.DataFrame({
            "input_text": self.texts(n, topic_offset),
            "latency_ms": ttft + per_token * (tokens - 1),
            "ttft_ms": ttft,
            "tokens_out": tokens,
            "status": "ok",
            "output_text": outputs,
            "finish_reason": np.where(rng.random(n) < truncated, "length", "stop"),
            "reference": np.where(has_feedback & (rng.random(n) < 0.5),
                                  np.asarray(references, dtype=object), None),
            "rating": np.where(has_feedback, (rng.random(n) < rating).astype(float), np.nan),
        })
