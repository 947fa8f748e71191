"""A generative canary judged on what matters for it: errors, TTFT and time per token against
the stable version, mean rating and reference score, by the daemon's own window judge and by
the deploy package's traffic judge. Seeded traffic; verdicts, not exact numbers."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from daemon.events import ChatMessage, FeedbackEvent, InferenceEvent, Output
from daemon.ingest.batch import PartitionBatch
from daemon.monitor.canary import WindowJudge
from daemon.monitor.config import LabelJoinConfig, ReferenceConfig, WindowConfig
from daemon.monitor.window_store import WindowStore
from daemon.monitor.windows import MonitoringSettings
from deploy.config import CanaryConfig
from deploy.judge import TrafficJudge
from deploy.verdict import CanaryQuery, CanaryVerdict

CONFIG = CanaryConfig(min_events=200, min_labelled=60, max_error_rate=0.02)
SETTINGS = MonitoringSettings(WindowConfig(size=5000), ReferenceConfig(first_n=100),
                              LabelJoinConfig())
ANSWER = "hold the reset pin for ten seconds then wait for the green light"


def _traffic(rng: np.random.Generator, version: str, n: int, *, rating: float = 0.8,
             ttft_ms: float = 80.0, fidelity: float = 0.9, start: int = 0) -> list:
    events: list = []
    words = ANSWER.split()
    for i in range(start, start + n):
        rid = f"v{version}-{i}"
        answer = " ".join(w if rng.random() < fidelity else "router" for w in words)
        tokens = len(words)
        ttft = float(rng.gamma(8.0, ttft_ms / 8.0))
        events.append(InferenceEvent(
            request_id=rid, ts=1_764_000_000_000 + i * 100, model="support",
            model_version=version, latency_ms=ttft + 20.0 * (tokens - 1), ttft_ms=ttft,
            tokens_out=tokens, input={"messages": [ChatMessage("user", "my router blinks red")]},
            output=Output(text=answer, finish_reason="stop")))
        if i % 3 == 0:
            events.append(FeedbackEvent(request_id=rid, ts=1_764_000_000_000 + i * 100,
                                        model="support", rating=bool(rng.random() < rating)))
        elif i % 3 == 1:
            events.append(FeedbackEvent(request_id=rid, ts=1_764_000_000_000 + i * 100,
                                        model="support", reference=ANSWER))
    return events


def _window_judge(events: list) -> Callable[[CanaryQuery], CanaryVerdict]:
    store = WindowStore(lambda name: SETTINGS, SETTINGS, max_models=2)
    store.apply(PartitionBatch("t", 0, events, 0, len(events) - 1))
    return WindowJudge(store, CONFIG)


def _traffic_judge(events: list) -> Callable[[CanaryQuery], CanaryVerdict]:
    judge = TrafficJudge("support", CONFIG)
    for event in events:
        judge.observe(event)
    return judge


JUDGES = {"window": _window_judge, "traffic": _traffic_judge}
QUERY = CanaryQuery("support", canary_version=2, stable_version=1, since_s=0)


@pytest.mark.parametrize("judge", JUDGES)
def test_a_generative_canary_as_good_as_stable_is_healthy(judge: str) -> None:
    rng = np.random.default_rng(1)
    events = _traffic(rng, "1", 600) + _traffic(rng, "2", 300, start=600)
    verdict = JUDGES[judge](events)(QUERY)
    assert verdict.state == "healthy", verdict
    assert "TTFT" in verdict.reason
    evidence = verdict.evidence
    assert evidence["canary_rating_n"] >= CONFIG.min_labelled
    assert evidence["canary_reference_score_n"] >= CONFIG.min_labelled
    assert evidence["canary_accuracy"] is None  # ratings and references are not labels
    assert 0.8 < float(evidence["canary_reference_score"] or 0) <= 1.0


@pytest.mark.parametrize("judge", JUDGES)
@pytest.mark.parametrize(("change", "reason"), [
    ({"rating": 0.35}, "rating drop"),
    ({"ttft_ms": 300.0}, "TTFT p95"),
    ({"fidelity": 0.5}, "reference score drop"),
])
def test_a_worse_generative_canary_is_unhealthy(judge: str, change: dict, reason: str) -> None:
    rng = np.random.default_rng(2)
    events = _traffic(rng, "1", 600) + _traffic(rng, "2", 300, start=600, **change)
    verdict = JUDGES[judge](events)(QUERY)
    assert verdict.state == "unhealthy", verdict
    assert reason in verdict.reason


def test_the_window_judge_waits_for_feedback_before_promoting() -> None:
    rng = np.random.default_rng(3)
    events = [e for e in _traffic(rng, "1", 600) + _traffic(rng, "2", 300, start=600)
              if isinstance(e, InferenceEvent)]
    verdict = _window_judge(events)(QUERY)
    assert verdict.state == "insufficient" and "labels" in verdict.reason


def test_a_classifier_rated_by_its_users_is_still_judged_on_accuracy() -> None:
    from daemon.events import Output as Out

    events: list = []
    for i in range(200):
        for version in ("1", "2"):
            rid = f"c{version}-{i}"
            events.append(InferenceEvent(request_id=rid, ts=1_764_000_000_000 + i, model="support",
                                         model_version=version, latency_ms=20.0,
                                         output=Out(label="positive", score=0.9)))
            truth = "positive" if version == "1" or i % 2 else "negative"
            events.append(FeedbackEvent(request_id=rid, ts=1_764_000_000_000 + i,
                                        model="support", label=truth, rating=1.0))
    stats = _window_judge(events).stats_of("support", 2, 0)  # type: ignore[attr-defined]
    assert not stats.generator and stats.accuracy == 0.5 and stats.rating.mean == 1.0
    verdict = _window_judge(events)(QUERY)
    assert verdict.state == "unhealthy" and "accuracy drop" in verdict.reason
