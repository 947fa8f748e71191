"""Drift tests on columns and embeddings, the method table, the config and the suite's wiring."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from detector_synth import Traffic
from pydantic import ValidationError

from detectors.config import ColumnDrift, DriftConfig, EmbeddingDrift, SuiteConfig, TextDrift
from detectors.drift import ColumnDriftDetector, EmbeddingDriftDetector
from detectors.result import DetectorResult, Verdict
from detectors.stattests import METHODS, direction_of, is_pvalue
from detectors.suite import DetectorSuite, WindowData
from detectors.text import TextFeaturizer


@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_direction_agrees_with_evidentlys_own_verdict(method: str) -> None:
    """On a clear shift Evidently itself says drifted; our direction must say breach too."""
    from evidently.legacy.calculations.stattests import get_stattest
    from evidently.legacy.core import ColumnType

    rng = np.random.default_rng(0)
    kind = "categorical" if "categorical" in METHODS[method][1] else "numerical"
    if kind == "numerical":
        ref, cur = rng.normal(0, 1, 300), rng.normal(1.5, 1, 300)
    else:
        ref, cur = rng.choice(["a", "b"], 300, p=[0.8, 0.2]), rng.choice(["a", "b"], 300,
                                                                          p=[0.2, 0.8])
    ctype = ColumnType.Numerical if kind == "numerical" else ColumnType.Categorical
    test = get_stattest(None, None, ctype, method)
    threshold = 0.05 if is_pvalue(method) else test.default_threshold
    theirs = test(pd.Series(ref), pd.Series(cur), ctype, threshold)
    ours = ColumnDriftDetector("x", kind, method, threshold, min_samples=10).evaluate(ref, cur)
    assert bool(theirs.drifted) and ours.breached
    assert ours.direction == direction_of(method) and ours.method == method
    assert ours.statistic == pytest.approx(float(theirs.drift_score))


def test_pvalue_columns_do_not_cry_wolf_and_catch_a_shift() -> None:
    rng = np.random.default_rng(1)
    detector = ColumnDriftDetector("score", "numerical", "ks", 1e-4)
    ref = rng.beta(6, 2, 5000)
    assert not any(detector.evaluate(ref, rng.beta(6, 2, 1000)).breached for _ in range(200))
    shifted = detector.evaluate(ref, rng.beta(4, 3, 1000))
    assert shifted.breached and shifted.statistic < 1e-10 and shifted.direction == "below"


def test_categorical_prediction_drift_and_missing_values() -> None:
    rng = np.random.default_rng(2)
    detector = ColumnDriftDetector("prediction", "categorical", "jensenshannon", 0.1)
    ref = rng.choice(["neg", "pos", None], 3000, p=[0.45, 0.45, 0.1])
    same = detector.evaluate(ref, rng.choice(["neg", "pos"], 1000))
    assert not same.breached and same.n_reference < 3000 and same.direction == "above"
    moved = detector.evaluate(ref, rng.choice(["neg", "pos"], 1000, p=[0.85, 0.15]))
    assert moved.breached and moved.statistic > 0.1


def test_too_few_samples_is_insufficient_not_ok() -> None:
    detector = ColumnDriftDetector("x", "numerical", "wasserstein", 0.1, min_samples=200)
    result = detector.evaluate(np.arange(1000.0), np.r_[np.arange(199.0), [np.nan] * 50])
    assert result.verdict is Verdict.INSUFFICIENT and result.n_current == 199


@pytest.mark.parametrize("method", ["distance", "model", "ratio", "mmd"])
def test_embedding_methods_separate_a_shift_from_noise(method: str) -> None:
    source = Traffic(seed=3, dim=64)
    thresholds = {"distance": 0.15, "model": 0.6, "ratio": 0.2, "mmd": 0.005}
    detector = EmbeddingDriftDetector("input_text", method, thresholds[method], max_rows=600,
                                      min_samples=100)
    ref = source.embeddings(1500)
    same = detector.evaluate(ref, source.embeddings(600))
    moved = detector.evaluate(ref, source.embeddings(600, shift=0.3))
    assert not same.breached and moved.breached, (same.statistic, moved.statistic)
    assert moved.method.startswith(f"embedding_{method}") and moved.direction == "above"
    assert same.n_reference == 600  # max_rows kept evenly spaced rows


def test_text_featurizer_measures_oov_out_of_sample() -> None:
    texts = [f"common words here t{i}" for i in range(100)]
    featurizer = TextFeaturizer(texts)
    # Odd texts' unique token t<i> was never in the (even-text) vocabulary: 1 of 4 tokens.
    assert np.allclose(featurizer.reference_oov, 0.25)
    feats = featurizer.features(["common words", "brand new tokens", ""])
    assert feats["oov"].tolist() == [0.0, 1.0, 0.0]
    assert feats["words"].tolist() == [2.0, 3.0, 0.0] and feats["length"][0] == 12


def test_config_rejects_misspellings_and_mismatched_methods() -> None:
    with pytest.raises(ValidationError, match="latncy"):
        SuiteConfig.model_validate({"latncy": {}})
    with pytest.raises(ValidationError, match="does not accept categorical"):
        ColumnDrift(column="x", kind="categorical", method="ks")
    with pytest.raises(ValidationError, match="unknown drift method"):
        TextDrift(column="t", method="kolmogorov")
    with pytest.raises(ValidationError, match="max_rows"):
        EmbeddingDrift(method="mmd")
    with pytest.raises(ValidationError, match="nothing to check"):
        SuiteConfig.model_validate({"latency": {"p95_ms": None, "error_rate_max": None}})
    # Off is fine: the suite then simply has no latency detector.
    off = SuiteConfig.model_validate({"latency": {"enabled": False, "p95_ms": None,
                                                  "error_rate_max": None}})
    assert DetectorSuite(off).latency is None
    with pytest.raises(ValueError):
        DetectorResult.judge("d", "m", 1.0, 0.5, "sideways", 0, 0)


def test_bonferroni_splits_family_alpha_over_pvalue_tests_only() -> None:
    config = SuiteConfig(drift=DriftConfig(
        family_alpha=1e-3,
        texts=(TextDrift(column="t"),),  # 3 ks tests
        columns=(ColumnDrift(column="p", kind="categorical"),  # chisquare
                 ColumnDrift(column="s", kind="numerical", method="wasserstein"),  # distance
                 ColumnDrift(column="q", kind="numerical", threshold=0.01))))  # explicit
    assert config.pvalue_threshold() == pytest.approx(1e-3 / 4)
    suite = DetectorSuite(config)
    thresholds = {d.column: d.threshold for d in suite.column_detectors}
    assert thresholds == {"p": pytest.approx(2.5e-4), "s": 0.1, "q": 0.01}


def test_suite_absent_columns_are_insufficient_never_breach() -> None:
    source = Traffic(seed=4)
    suite = DetectorSuite()
    ref = source.frame(2000)
    current = source.frame(1000).drop(columns=["label", "score", "input_text"])
    results = suite.run(ref, current)
    by_key = {r.key: r for r in results}
    for key in ("drift.oov[input_text]", "drift.distribution[score]",
                "accuracy.accuracy_vs_reference", "drift.embedding[input_text]"):
        assert by_key[key].verdict is Verdict.INSUFFICIENT, key
    assert by_key["latency.p95_ms"].verdict is Verdict.OK
    assert not any(r.breached for r in results)


def test_suite_precomputed_text_features_equal_derived_ones() -> None:
    source = Traffic(seed=5)
    suite = DetectorSuite()
    ref_frame, cur_frame = source.frame(2000), source.frame(1000, vocab_offset=2500)
    reference = suite.prepare(ref_frame)
    derived = suite.run(reference, cur_frame)
    feats = reference.text_features("input_text", cur_frame["input_text"].tolist())
    pre = cur_frame.drop(columns=["input_text"]).assign(
        **{f"input_text.{k}": v for k, v in feats.items()})
    precomputed = suite.run(reference, pre)
    assert [(r.key, r.statistic) for r in derived] == [(r.key, r.statistic) for r in precomputed]
    assert {r.key for r in derived if r.breached} >= {"drift.oov[input_text]"}


def test_generation_task_watches_output_length_and_rating() -> None:
    rng = np.random.default_rng(6)
    source = Traffic(seed=6)
    suite = DetectorSuite(SuiteConfig(task="causal-lm"))

    def frame(n: int, out_words: tuple[int, int]) -> pd.DataFrame:
        return pd.DataFrame({
            "input_text": source.texts(n),
            "output_text": [" ".join(["tok"] * int(k)) for k in rng.integers(*out_words, n)],
            "latency_ms": rng.gamma(4, 50, n), "status": "ok", "rating": rng.beta(8, 2, n)})

    reference = suite.prepare(WindowData(frame(3000, (5, 40))))
    same = suite.run(reference, frame(1000, (5, 40)))
    assert not any(r.breached for r in same)
    assert {"drift.length[output_text]", "accuracy.mean_rating_vs_reference"} <= {
        r.key for r in same if r.verdict is Verdict.OK}
    longer = {r.key for r in suite.run(reference, frame(1000, (30, 90))) if r.breached}
    assert {"drift.length[output_text]", "drift.words[output_text]"} <= longer


def test_embedding_distance_equals_evidentlys_method_on_full_frames() -> None:
    from evidently.legacy.metrics.data_drift.embedding_drift_methods import DistanceDriftMethod

    source = Traffic(seed=9, dim=48)
    ref, cur = source.embeddings(3000), source.embeddings(800, shift=0.05)
    for dist in ("euclidean", "cosine", "cityblock", "chebyshev"):
        theirs = DistanceDriftMethod(dist=dist, threshold=0.1)(pd.DataFrame(cur),
                                                               pd.DataFrame(ref))[0]
        ours = EmbeddingDriftDetector("t", "distance", 0.1, dist=dist).evaluate(ref, cur)
        assert ours.statistic == pytest.approx(float(theirs), rel=1e-5), dist
    with_nan = cur.copy()
    with_nan[:10, 3] = np.nan
    skipped = EmbeddingDriftDetector("t").evaluate(ref, with_nan)
    assert skipped.n_current == 790 and np.isfinite(skipped.statistic)
