"""A generator's detectors: serving health (TTFT, time per token, truncation, empty answers),
reference scores and the causal-lm suite, on seeded traffic. Bounds, not exact values."""

from __future__ import annotations

import numpy as np
import pytest
from detector_synth import ChatTraffic

from detectors.config import QualityConfig, SuiteConfig
from detectors.generation import GenerationDetector
from detectors.quality import ReferenceScoreDetector, score_pairs
from detectors.result import DetectorResult, Verdict
from detectors.suite import DetectorSuite, WindowData
from lifeguard.scores import reference_scores, time_per_output_token, token_f1

WINDOW = 400


def _generation(detector: GenerationDetector, frame) -> dict[str, DetectorResult]:  # type: ignore[no-untyped-def]
    results = detector.evaluate(frame["latency_ms"], frame["ttft_ms"], frame["tokens_out"],
                                frame["finish_reason"], frame["output_text"],
                                frame["status"] == "error")
    return {r.metric: r for r in results}


def test_scores_rank_answers_and_read_any_language() -> None:
    ref = "hold the reset pin for ten seconds"
    scores = reference_scores([ref, "hold the pin for ten seconds", "ten seconds the pin",
                               "buy a new router", ""], [ref] * 5)
    assert scores[0] == 1.0 and scores[0] > scores[1] > scores[2] > scores[3] == 0.0
    assert scores[4] == 0.0
    assert reference_scores(["réinitialisez le routeur"], ["réinitialisez le routeur"])[0] == 1.0
    assert token_f1("ten seconds the pin", ref) > reference_scores(["ten seconds the pin"],
                                                                  [ref])[0]  # order-blind
    assert np.isnan(score_pairs(np.array(["a", None]), np.array([None, "b"]))).all()


def test_time_per_output_token_excludes_the_first_token() -> None:
    tpot = time_per_output_token(np.array([1100.0, 500.0, 300.0, 200.0]),
                                 np.array([100.0, 100.0, np.nan, 100.0]),
                                 np.array([11, 1, 10, 3]))
    assert tpot.tolist() == [100.0, 50.0]  # one token: no rate; no TTFT: no rate


def test_generation_health_stationary_then_each_regression() -> None:
    source = ChatTraffic(seed=21, vocab=800)
    detector = GenerationDetector(ttft_p95_ms=250, tpot_p95_ms=60, truncation_rate_max=0.08,
                                  empty_output_rate_max=0.02)
    for _ in range(20):
        assert not [m for m, r in _generation(detector, source.frame(WINDOW)).items()
                    if r.breached]
    slow = _generation(detector, source.frame(WINDOW, ttft_scale=400))
    assert slow["ttft_p95_ms"].breached and slow["ttft_p95_ms"].statistic > 250
    assert not slow["tpot_p95_ms"].breached
    cut = _generation(detector, source.frame(WINDOW, truncated=0.25))
    assert cut["truncation_rate"].breached and 0.15 < cut["truncation_rate"].statistic < 0.35
    empty = _generation(detector, source.frame(WINDOW, empty=0.1))
    assert empty["empty_output_rate"].breached and not empty["truncation_rate"].breached


def test_generation_health_needs_samples_and_rows_that_report() -> None:
    source = ChatTraffic(seed=22, vocab=800)
    frame = source.frame(WINDOW)
    frame["ttft_ms"] = np.nan  # a replica that reports no TTFT
    frame["finish_reason"] = None
    results = _generation(GenerationDetector(min_samples=100), frame)
    assert results["ttft_p95_ms"].verdict is Verdict.INSUFFICIENT
    assert results["tpot_p95_ms"].verdict is Verdict.INSUFFICIENT
    assert results["truncation_rate"].verdict is Verdict.INSUFFICIENT
    assert results["empty_output_rate"].verdict is Verdict.OK
    with pytest.raises(ValueError, match="nothing to check"):
        GenerationDetector(None, None, None, None)
    with pytest.raises(ValueError, match="truncation_rate_max"):
        GenerationDetector(truncation_rate_max=1.5)


def test_reference_score_stationary_then_worse_answers() -> None:
    source = ChatTraffic(seed=23, vocab=800)
    detector = ReferenceScoreDetector(floor=0.5, min_references=60)

    def scores(**kwargs: float) -> np.ndarray:
        frame = source.frame(WINDOW, **kwargs)
        return score_pairs(frame["output_text"], frame["reference"])

    reference = scores()
    for _ in range(20):
        assert not any(r.breached for r in detector.evaluate(reference, scores()))
    worse = {r.metric: r for r in detector.evaluate(reference, scores(fidelity=0.5))}
    assert worse["reference_score_vs_reference"].breached
    assert worse["reference_score_vs_reference"].statistic < 0.7
    few = detector.evaluate(reference, scores()[:50])
    assert {r.verdict for r in few} == {Verdict.INSUFFICIENT}


def _suite_window(source: ChatTraffic, n: int, shift: float = 0.0, **kwargs: float) -> WindowData:
    frame = source.frame(n, **kwargs)
    return WindowData(frame, {"input_text": source.embeddings(n),
                              "output_text": source.embeddings(n, shift=shift)})


def test_causal_lm_suite_is_quiet_when_stationary_and_sees_output_and_rating_shifts() -> None:
    source = ChatTraffic(seed=24, vocab=800)
    config = SuiteConfig(task="causal-lm", quality=QualityConfig(min_references=60))
    suite = DetectorSuite(config)
    reference = suite.prepare(_suite_window(source, 2000))
    decided: set[str] = set()
    for _ in range(20):
        results = suite.run(reference, _suite_window(source, WINDOW))
        assert [r.key for r in results if r.breached] == []
        decided |= {r.key for r in results if r.verdict is not Verdict.INSUFFICIENT}
    assert {"generation.ttft_p95_ms", "generation.tpot_p95_ms", "generation.truncation_rate",
            "generation.empty_output_rate", "accuracy.mean_rating_vs_reference",
            "quality.reference_score_vs_reference", "drift.embedding[output_text]",
            "drift.oov[output_text]", "drift.embedding[input_text]"} <= decided
    # The model starts answering with other words: output drift and worse scores, same prompts.
    shifted = suite.run(reference, _suite_window(source, WINDOW, shift=1.0, fidelity=0.4,
                                                 rating=0.4))
    fired = {r.key for r in shifted if r.breached}
    assert "drift.embedding[output_text]" in fired
    assert "accuracy.mean_rating_vs_reference" in fired
    assert "quality.reference_score_vs_reference" in fired
    assert not any("[input_text]" in k for k in fired)


def test_a_classifier_suite_runs_no_generator_detectors() -> None:
    suite = DetectorSuite(SuiteConfig())
    assert suite.generation is None and suite.quality is None
    on = DetectorSuite(SuiteConfig(task="causal-lm"))
    assert on.generation is not None and on.quality is not None
    assert on.latency is not None and on.latency.slos == {}  # TTFT and TPOT instead
