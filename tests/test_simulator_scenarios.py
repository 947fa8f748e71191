"""Scenario plans, the label delay queue and the live stats: pure logic, no broker."""

from __future__ import annotations

import math
import statistics

import pytest
from pydantic import ValidationError

from simulator.corpus import BASE_DOMAIN, DOMAINS, SHIFT_DOMAIN
from simulator.drivers import DirectConfig, ReplicaConfig
from simulator.errors import SimulatorConfigError
from simulator.runner import LabelQueue, Simulator
from simulator.scenarios import Scenario, ScenarioConfig
from simulator.stats import LiveStats


def _plans(**overrides: object) -> tuple[Scenario, list]:
    settings: dict[str, object] = {"rate": 100.0, "duration_s": 20.0, "shift_at_s": 8.0,
                                   "seed": 3, "run_tag": "t"}
    settings.update(overrides)
    scenario = Scenario(ScenarioConfig(**settings))  # type: ignore[arg-type]
    return scenario, [scenario.plan(i) for i in range(scenario.n_requests)]


def _shifted_nouns(text: str) -> bool:
    return bool(set(DOMAINS[SHIFT_DOMAIN].nouns) & set(text.replace(",", " ").split()))


def test_abrupt_shift_changes_the_text_distribution_exactly_at_t() -> None:
    scenario, plans = _plans(kind="abrupt-shift")
    assert scenario.n_requests == 2000
    before = [p for p in plans if p.offset_s < 8.0]
    after = [p for p in plans if p.offset_s >= 8.0]
    assert len(before) == 800
    assert all(p.review.domain == BASE_DOMAIN and p.phase == "pre" for p in before)
    assert all(p.review.domain == SHIFT_DOMAIN and p.phase == "post" for p in after)
    # The texts themselves move: the new domain's nouns appear only after T.
    assert not any(_shifted_nouns(p.text) for p in before)
    assert sum(_shifted_nouns(p.text) for p in after) / len(after) > 0.9


def test_gradual_shift_mixes_in_the_new_domain_linearly_over_the_ramp() -> None:
    _, plans = _plans(kind="gradual-shift", duration_s=40.0, shift_at_s=10.0, ramp_s=20.0)
    assert {p.phase for p in plans} == {"pre", "ramp", "post"}
    for start in range(0, 40, 5):
        window = [p for p in plans if start <= p.offset_s < start + 5]
        share = sum(p.review.domain == SHIFT_DOMAIN for p in window) / len(window)
        expected = statistics.mean(min(1.0, max(0.0, (p.offset_s - 10) / 20)) for p in window)
        assert abs(share - expected) < 4 * math.sqrt(0.25 / len(window)) + 0.01, (start, share)


def test_plan_is_deterministic_and_coverage_never_changes_the_texts() -> None:
    _, first = _plans(kind="abrupt-shift")
    _, again = _plans(kind="abrupt-shift")
    _, other_coverage = _plans(kind="abrupt-shift", label_coverage=0.3)
    _, other_seed = _plans(kind="abrupt-shift", seed=4)
    assert first == again
    assert [p.text for p in first] == [p.text for p in other_coverage]
    assert [p.text for p in first] != [p.text for p in other_seed]
    assert len({p.request_id for p in first}) == len(first)


def test_label_coverage_and_delay_follow_the_config() -> None:
    _, plans = _plans(label_coverage=0.35, label_delay_s=2.0, label_jitter_s=0.5)
    share = sum(p.labelled for p in plans) / len(plans)
    assert abs(share - 0.35) < 4 * math.sqrt(0.35 * 0.65 / len(plans))
    delays = [p.label_delay_s for p in plans]
    assert min(delays) >= 2.0 and max(delays) < 2.5
    assert statistics.mean(delays) == pytest.approx(2.25, abs=0.03)


def test_latency_regression_multiplies_latency_after_t_and_keeps_the_texts() -> None:
    _, plans = _plans(kind="latency-regression", latency_ms=40.0, latency_factor=3.0)
    before = statistics.median(p.latency_ms for p in plans if p.offset_s < 8.0)
    after = statistics.median(p.latency_ms for p in plans if p.offset_s >= 8.0)
    assert before == pytest.approx(40.0, rel=0.1)
    assert after / before == pytest.approx(3.0, rel=0.15)
    assert all(p.review.domain == BASE_DOMAIN for p in plans)


def test_concept_drift_flips_labels_after_t_for_the_same_kind_of_inputs() -> None:
    _, plans = _plans(kind="concept-drift")
    before = [p for p in plans if p.offset_s < 8.0]
    after = [p for p in plans if p.offset_s >= 8.0]
    assert all(p.review.domain == BASE_DOMAIN for p in plans)
    assert all(p.truth == p.model_label for p in before)
    flipped = sum(p.truth != p.model_label for p in after) / len(after)
    assert 0.15 < flipped < 0.5
    _, narrow = _plans(kind="concept-drift", concept_words=("crisp",))
    narrow_flipped = sum(p.truth != p.model_label for p in narrow if p.offset_s >= 8.0)
    assert 0 < narrow_flipped / len(after) < flipped / 2


def test_stationary_has_one_phase_and_no_shift() -> None:
    scenario, plans = _plans(kind="stationary")
    assert {p.phase for p in plans} == {"steady"}
    assert all(p.review.domain == BASE_DOMAIN and p.truth == p.model_label for p in plans)
    assert scenario.shift_share(19.0) == 0.0


@pytest.mark.parametrize("bad", [
    {"kind": "abrupt-shift", "shift_at_s": 30.0, "duration_s": 20.0},
    {"kind": "abrupt-shift", "shift_domain": BASE_DOMAIN},
    {"base_domain": "spaceships"},
    {"kind": "concept-drift", "concept_words": ("zebra",)},
    {"label_coverage": 1.5},
    {"rate": 0.0},
    {"rate": 0.1, "duration_s": 5.0},
    {"unknown_setting": 1},
    {"run_tag": "has space"},
])
def test_bad_scenario_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ScenarioConfig(**bad)  # type: ignore[arg-type]


def test_replica_mode_refuses_a_latency_regression_it_cannot_inject() -> None:
    config = ScenarioConfig(kind="latency-regression", duration_s=10.0, shift_at_s=5.0)
    with pytest.raises(SimulatorConfigError, match="direct mode"):
        Simulator(config, ReplicaConfig(urls=["http://127.0.0.1:1"]))
    Simulator(config, DirectConfig(kafka="127.0.0.1:1"))  # direct mode takes it
    with pytest.raises(ValidationError):
        ReplicaConfig(urls=[])


def test_label_queue_releases_in_due_order_and_refuses_when_full() -> None:
    queue = LabelQueue(capacity=3)
    assert queue.push(5.0, "c", "positive")
    assert queue.push(1.0, "a", "negative")
    assert queue.push(1.0, "b", "positive")
    assert not queue.push(0.5, "d", "negative")  # full: refused, caller counts the drop
    assert queue.next_due() == 1.0
    assert queue.pop_due(0.9) == []
    assert queue.pop_due(1.0) == [("a", "negative"), ("b", "positive")]
    assert len(queue) == 1 and queue.pop_due(10.0) == [("c", "positive")]
    with pytest.raises(ValueError):
        LabelQueue(0)


def test_live_stats_break_accuracy_down_by_phase_version_and_time() -> None:
    stats = LiveStats(planned=10, bucket_s=5.0)
    for offset, version, correct in [(0.0, "1", True), (1.0, "1", True), (6.0, "1", False),
                                     (7.0, "1", False), (7.5, "2", True), (11.0, "2", True)]:
        stats.request_sent(shifted=offset >= 5.0)
        stats.answered("pre" if offset < 5.0 else "post", version, offset, correct, 10.0)
    stats.request_sent(shifted=True)
    stats.request_failed("http_503 @ x")
    snap = stats.snapshot()
    assert (snap.sent, snap.ok, snap.failed, snap.in_flight, snap.shifted_sent) == (7, 6, 1, 0, 5)
    assert snap.failures == {"http_503 @ x": 1}
    assert snap.accuracy("pre") == 1.0
    assert snap.accuracy("post") == pytest.approx(0.5)
    assert snap.accuracy("post", "1") == 0.0 and snap.accuracy("post", "2") == 1.0
    assert snap.accuracy("ramp") is None
    assert [(p.t_s, p.version, p.answered, p.correct) for p in snap.timeline] == [
        (0.0, "1", 2, 2), (5.0, "1", 2, 0), (5.0, "2", 1, 1), (10.0, "2", 1, 1)]
    assert snap.to_dict()["by_phase"]["post"]["accuracy"] == pytest.approx(0.5)
