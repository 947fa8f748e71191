"""The support scenario's corpus and plan (pure logic): seeded, the shift changes the product
and its right answers, feedback coverage is planned per request; the report splits detector
results into one panel per family."""

from __future__ import annotations

import pytest

from harness.report import detector_families
from lifeguard.scores import reference_scores
from simulator.support import (
    PRODUCTS,
    SupportScenario,
    SupportScenarioConfig,
    exchanges,
    training_pairs,
)


def test_corpus_is_seeded_and_products_disagree() -> None:
    assert exchanges(50, "router", seed=3) == exchanges(50, "router", seed=3)
    assert exchanges(50, "router", seed=3) != exchanges(50, "router", seed=4)
    for intent, answer in PRODUCTS["router"].answers.items():
        other = PRODUCTS["thermostat"].answers[intent]
        # The old product's answer to the same intent scores low against the new one's: a
        # model that never saw the shift loses real quality.
        assert reference_scores([answer], [other], "rougeL")[0] < 0.5
    words = {w for e in exchanges(200, "thermostat") for w in e.question.split()}
    assert {"thermostat", "boiler"} & words
    prompt, answer = training_pairs(1)[0]
    assert prompt.startswith("user: ") and prompt.endswith("\nassistant:")
    assert answer.strip() in PRODUCTS["router"].answers.values()


def test_plan_shifts_at_t_and_plans_late_feedback() -> None:
    config = SupportScenarioConfig(rate=10, duration_s=20, shift_at_s=10, seed=1, run_tag="t",
                                   reference_coverage=0.5, rating_coverage=1.0)
    scenario = SupportScenario(config)
    plans = [scenario.plan(i) for i in range(scenario.n_requests)]
    assert {p.exchange.product for p in plans if p.offset_s < 10} == {"router"}
    assert {p.exchange.product for p in plans if p.offset_s >= 10} == {"thermostat"}
    assert {p.phase for p in plans} == {"pre", "post"}
    assert all(p.give_rating for p in plans)
    assert 0.3 < sum(p.give_reference for p in plans) / len(plans) < 0.7
    assert all(3.0 <= p.feedback_delay_s < 5.0 for p in plans)
    assert plans[5] == SupportScenario(config).plan(5)
    steady = SupportScenario(config.model_copy(update={"stationary": True}))
    assert {steady.plan(i).exchange.product for i in range(200)} == {"router"}
    with pytest.raises(ValueError, match="shift"):
        SupportScenarioConfig(shift_product="router")


def test_report_gives_each_detector_family_its_panel() -> None:
    evaluations = [{"seen_s": 10.0, "model_version": "1", "results": [
        {"key": "drift.text_length", "statistic": 0.3, "threshold": 1e-4},
        {"key": "quality.reference_score_vs_reference", "statistic": 0.8, "threshold": 0.7},
        {"key": "generation.ttft_p95_ms", "statistic": 120.0, "threshold": 5000.0},
        {"key": "generation.truncation_rate", "statistic": None, "threshold": 0.5}]}]
    families = detector_families(evaluations)
    assert list(families) == ["drift", "generation", "quality"]
    stats, thresholds = families["quality"]
    assert stats == {"quality.reference_score_vs_reference v1": [(10.0, 0.8)]}
    assert thresholds == {"quality.reference_score_vs_reference v1": [(10.0, 0.7)]}
    assert "generation.truncation_rate v1" not in families["generation"][0]
