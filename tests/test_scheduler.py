"""The pass scheduler: least recently evaluated first, a slow model never starves a fast one,
and the lag per model (seconds a due pass has waited) on /metrics."""

from __future__ import annotations

import itertools
import threading
import time

from prometheus_client import CollectorRegistry

from daemon.assembly import build_monitoring
from daemon.config import parse_config
from daemon.monitor.scheduler import PassScheduler


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _always_due(lanes: dict[str, int], seconds: dict[str, float], run_for: float
                ) -> list[str]:
    """Every model asks for a pass again as soon as one ends; returns the order they ran."""
    order: list[str] = []
    lock = threading.Lock()
    scheduler: PassScheduler

    def run(name: str) -> None:
        time.sleep(seconds[name])
        with lock:
            order.append(name)
        scheduler.request(name)

    scheduler = PassScheduler(run, {n: (0.0, lane) for n, lane in lanes.items()},
                              lanes=max(lanes.values()) + 1)
    for name in lanes:
        scheduler.request(name)
    scheduler.start()
    time.sleep(run_for)
    scheduler.stop()
    return order


def test_a_slow_model_takes_its_turn_and_never_starves_a_fast_one() -> None:
    order = _always_due({"slow": 0, "fast": 0}, {"slow": 0.2, "fast": 0.0}, run_for=1.2)
    slow, fast = order.count("slow"), order.count("fast")
    assert slow >= 2 and fast >= slow - 1, order
    # Least recently evaluated first: on one lane the two alternate.
    assert all(a != b for a, b in itertools.pairwise(order)), order


def test_on_separate_lanes_a_slow_model_does_not_hold_a_fast_one_back() -> None:
    order = _always_due({"slow": 0, "fast": 1}, {"slow": 0.3, "fast": 0.01}, run_for=1.0)
    assert order.count("slow") >= 1 and order.count("fast") >= 5 * order.count("slow"), order


def test_pick_prefers_the_model_evaluated_least_recently() -> None:
    clock = Clock()
    scheduler = PassScheduler(lambda name: None, {"a": (10.0, 0), "b": (10.0, 0)}, 1, clock)
    slots = scheduler.slots
    slots["a"].last_started, slots["b"].last_started = 50.0, 40.0
    assert scheduler.pick(0) is None  # nothing due yet
    scheduler.request("a")
    scheduler.request("b")
    picked = scheduler.pick(0)
    assert picked is not None and picked.name == "b"


def test_lag_counts_from_when_the_pass_became_due() -> None:
    clock = Clock()
    scheduler = PassScheduler(lambda name: None, {"a": (0.0, 0), "b": (30.0, 0)}, 1, clock)
    assert scheduler.lag() == {"a": 0.0, "b": 0.0}
    scheduler.request("a")
    clock.now = 104.0
    assert scheduler.lag()["a"] == 4.0
    clock.now = 130.0
    scheduler.request("b")  # what b's interval job does at its tick
    clock.now = 137.5  # and nothing served it
    assert scheduler.lag() == {"a": 37.5, "b": 7.5}
    scheduler.request("b")  # the next tick while still due: one pass, due since the first
    assert scheduler.lag()["b"] == 7.5


def test_apscheduler_interval_jobs_make_models_due_and_the_lane_runs_them() -> None:
    ran: list[str] = []
    scheduler = PassScheduler(ran.append, {"every": (0.2, 0), "asked": (0.0, 0)}, 1)
    scheduler.start()
    try:
        assert scheduler.intervals is not None
        assert {job.id for job in scheduler.intervals.get_jobs()} == {"evaluate:every"}
        time.sleep(1.1)
    finally:
        scheduler.stop()
    assert scheduler.intervals is None
    assert 3 <= ran.count("every") <= 6, ran
    assert "asked" not in ran  # no interval: only when asked


def test_lag_gauge_rises_while_a_pass_waits_and_falls_once_served() -> None:
    config = parse_config({"evaluation": {"isolation": "thread"}, "models": [
        {"name": "m", "evaluation": {"interval": 3600}}]})
    registry = CollectorRegistry()
    monitoring = build_monitoring(config, registry, [])
    evaluator = monitoring.evaluator

    def lag() -> float | None:
        return registry.get_sample_value("lifeguard_evaluation_lag_seconds", {"model": "m"})

    assert lag() == 0.0
    evaluator.scheduler.request("m")
    time.sleep(0.05)
    waited = lag()
    assert waited is not None and waited >= 0.05
    monitoring.start()  # the lane serves it (no windows yet: an empty pass)
    try:
        deadline = time.monotonic() + 30
        while lag() != 0.0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert lag() == 0.0
    finally:
        monitoring.stop()
