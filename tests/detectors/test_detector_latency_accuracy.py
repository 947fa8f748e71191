"""Latency against SLOs and accuracy on delayed labels, with seeded traffic."""

from __future__ import annotations

import numpy as np
import pytest
from detector_synth import Traffic

from detectors.accuracy import AccuracyDetector, macro_f1
from detectors.latency import LatencyDetector
from detectors.result import DetectorResult, Verdict


def _by_metric(results: tuple[DetectorResult, ...]) -> dict[tuple, DetectorResult]:
    return {(r.metric, r.segment): r for r in results}


def test_latency_regression_detected_and_steady_latency_is_not() -> None:
    rng = np.random.default_rng(3)
    detector = LatencyDetector(p50_ms=150, p95_ms=400, p99_ms=800, error_rate_max=0.02)
    steady = [detector.evaluate(rng.gamma(4, 20, 1000), rng.random(1000) < 0.005)
              for _ in range(50)]
    assert not any(r.breached for results in steady for r in results)
    slow = _by_metric(detector.evaluate(rng.gamma(4, 120, 1000), rng.random(1000) < 0.005))
    assert slow[("p95_ms", None)].breached and slow[("p99_ms", None)].breached
    assert slow[("p95_ms", None)].statistic > 400
    assert not slow[("error_rate", None)].breached
    failing = _by_metric(detector.evaluate(rng.gamma(4, 20, 1000), rng.random(1000) < 0.10))
    assert failing[("error_rate", None)].breached
    assert 0.07 < failing[("error_rate", None)].statistic < 0.13


def test_latency_below_min_samples_decides_nothing() -> None:
    detector = LatencyDetector(p95_ms=10, min_samples=100)
    results = detector.evaluate(np.full(99, 5000.0), np.ones(99, dtype=bool))
    assert {r.verdict for r in results} == {Verdict.INSUFFICIENT}
    assert all(r.statistic is None and not r.breached for r in results)


@pytest.mark.parametrize("kwargs", [{"p95_ms": 0}, {"error_rate_max": 1.5}, {"min_samples": 0},
                                    {"p95_ms": None, "error_rate_max": None}])
def test_latency_rejects_bad_config(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        LatencyDetector(**kwargs)


def test_accuracy_drop_detected_once_enough_delayed_labels_arrive() -> None:
    source = Traffic(seed=5)
    ref = source.frame(5000)
    detector = AccuracyDetector(floors={"accuracy": 0.7}, min_labels=200)
    reference = (ref["label"].to_numpy(), ref["prediction"].to_numpy())
    window = source.frame(2000, accuracy=0.6)  # the model got much worse
    truth, pred = window["label"].to_numpy(), window["prediction"].to_numpy()
    verdicts = []
    # Labels trickle in: the first k events of the window have their feedback joined.
    for k in (0, 50, 199, 200, 400, 2000):
        labelled = np.where(np.arange(truth.size) < k, truth, None)
        verdicts.append(_by_metric(detector.evaluate(reference, (labelled, pred))))
    for k, results in zip((0, 50, 199), verdicts[:3], strict=True):
        assert all(r.verdict is Verdict.INSUFFICIENT for r in results.values()), k
        assert results[("accuracy_vs_reference", None)].n_current == k
    for results in verdicts[3:]:
        assert results[("accuracy_vs_reference", None)].breached
        assert results[("macro_f1_vs_reference", None)].breached
        assert 0.5 < results[("accuracy", None)].statistic < 0.7
    # More labels, a tighter margin: the threshold rises toward reference - tolerance.
    thresholds = [v[("accuracy_vs_reference", None)].threshold for v in verdicts[3:]]
    assert thresholds == sorted(thresholds) and thresholds[-1] < 0.9 - 0.05


def test_accuracy_holds_on_stationary_windows() -> None:
    source = Traffic(seed=6)
    ref = source.frame(5000)
    detector = AccuracyDetector(floors={"accuracy": 0.8, "macro_f1": 0.8})
    reference = (ref["label"].to_numpy(), ref["prediction"].to_numpy())
    for _ in range(100):
        w = source.frame(1000, label_share=0.25)
        results = detector.evaluate(reference, (w["label"].to_numpy(), w["prediction"].to_numpy()),
                                    w["language"].to_numpy(), ref["language"].to_numpy())
        assert not any(r.breached for r in results)


def test_segment_gap_flags_the_one_degraded_segment() -> None:
    source = Traffic(seed=8)
    ref = source.frame(6000)
    window = source.frame(3000)
    bad = window["language"].to_numpy() == "fr"
    worse = source.frame(int(bad.sum()), accuracy=0.55)
    window.loc[bad, "prediction"] = worse["prediction"].to_numpy()
    window.loc[bad, "label"] = worse["label"].to_numpy()
    detector = AccuracyDetector(segment_gap_max=0.15)
    results = _by_metric(detector.evaluate(
        (ref["label"].to_numpy(), ref["prediction"].to_numpy()),
        (window["label"].to_numpy(), window["prediction"].to_numpy()),
        window["language"].to_numpy(), ref["language"].to_numpy()))
    gap = results[("accuracy_segment_gap", None)]
    assert gap.breached and gap.direction == "above" and 0.25 < gap.statistic < 0.45
    assert results[("accuracy_vs_reference", "fr")].breached
    assert not results[("accuracy_vs_reference", "en")].breached
    assert not results[("accuracy_vs_reference", "de")].breached


def test_segments_with_too_few_labels_are_not_judged() -> None:
    rng = np.random.default_rng(2)
    truth = rng.choice(["a", "b"], 400)
    segments = np.where(np.arange(400) < 350, "big", "small")
    detector = AccuracyDetector(min_labels=100, min_labels_per_segment=100)
    results = _by_metric(detector.evaluate((truth, truth), (truth, truth), segments))
    assert results[("accuracy_vs_reference", "small")].verdict is Verdict.INSUFFICIENT
    assert results[("accuracy_vs_reference", "big")].verdict is Verdict.OK
    assert results[("accuracy_segment_gap", None)].verdict is Verdict.INSUFFICIENT


def test_generator_mean_rating_against_floor_and_reference() -> None:
    rng = np.random.default_rng(9)
    detector = AccuracyDetector(task="causal-lm", floors={"mean_rating": 0.6}, min_labels=100)
    reference = (rng.beta(8, 2, 2000), None)
    ok = _by_metric(detector.evaluate(reference, (rng.beta(8, 2, 300), None)))
    assert not any(r.breached for r in ok.values())
    worse = _by_metric(detector.evaluate(reference, (rng.beta(4, 4, 300), None)))
    assert worse[("mean_rating", None)].breached
    assert worse[("mean_rating_vs_reference", None)].breached


def test_macro_f1_matches_its_definition() -> None:
    truth = np.array(["a", "a", "a", "b", "b", "c"])
    pred = np.array(["a", "a", "b", "b", "c", "c"])
    # per class F1: a = 2*2/(3+2), b = 2*1/(2+2), c = 2*1/(1+2)
    expected = (0.8 + 0.5 + 2 / 3) / 3
    assert macro_f1(truth, pred)[0] == pytest.approx(expected)


@pytest.mark.parametrize("kwargs", [{"task": "ranking"}, {"floors": {"mean_rating": 0.5}},
                                    {"floors": {"accuracy": 2.0}}, {"tolerance": -0.1},
                                    {"min_labels": 0}, {"margin_z": -1}])
def test_accuracy_rejects_bad_config(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        AccuracyDetector(**kwargs)
