"""Pure logic of the rollout side: config validation, the state store, the reference judge's
statistics, the verdict contract, micro-batching."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import ValidationError

from deploy.batching import MicroBatcher
from deploy.config import CanaryConfig, FleetConfig
from deploy.judge import TrafficJudge
from deploy.rollout_store import RolloutStore
from deploy.verdict import CanaryQuery, CanaryVerdict
from harness.replicas import synthetic_traffic

URLS = ["http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"]


def test_fleet_config_is_strict(tmp_path: Path) -> None:
    ok = FleetConfig(replicas=[u + "/" for u in URLS], repository=tmp_path)
    assert ok.replicas == URLS and ok.rollout.strategy == "canary"
    with pytest.raises(ValidationError, match="canry"):
        FleetConfig.model_validate({"replicas": URLS, "repository": str(tmp_path),
                                    "rollout": {"canry": {}}})
    with pytest.raises(ValidationError, match="fewer than"):
        FleetConfig.model_validate({"replicas": URLS, "repository": str(tmp_path),
                                    "rollout": {"canary": {"replicas": 3}}})
    with pytest.raises(ValidationError, match="distinct"):
        FleetConfig(replicas=[URLS[0], URLS[0]], repository=tmp_path)
    with pytest.raises(ValidationError, match="http"):
        FleetConfig(replicas=["127.0.0.1:8000"], repository=tmp_path)


def test_store_round_trip_and_active_rollout(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = RolloutStore(path)
    record = store.create("m", 1, 2, "canary", "canary", desired=dict.fromkeys(URLS, 1),
                          observed=dict.fromkeys(URLS, 1))
    record = store.update(record, desired={**record.desired, URLS[0]: 2},
                          observed={**record.observed, URLS[0]: None}, canary_since=12.5)
    reopened = RolloutStore(path)  # what a restarted controller sees
    active = reopened.active("m")
    assert active is not None and active.id == record.id
    assert active.desired[URLS[0]] == 2 and active.observed[URLS[0]] is None
    assert active.canary_since == 12.5 and active.settled_version == 1
    assert reopened.update(active, phase="done").settled_version == 2
    reopened.update(active, phase="rolled_back", reason="canary unhealthy")
    assert reopened.active("m") is None
    assert reopened.latest("m", 2).phase == "rolled_back"  # type: ignore[union-attr]
    kinds = [(e.kind, e.detail.get("to")) for e in reopened.events(record.id)]
    assert kinds == [("created", None), ("phase", "done"), ("phase", "rolled_back")]
    # The tables are namespaced so they share the daemon's SQLite file.
    tables = {r[0] for r in sqlite3.connect(path).execute(
        "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"rollouts", "rollout_events"} <= tables
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


CFG = CanaryConfig(min_events=100, min_labelled=50, max_accuracy_drop=0.05,
                   max_error_rate=0.02, latency_slo_ms=100, max_latency_ratio=3)
QUERY = CanaryQuery("m", canary_version=2, stable_version=1, since_s=999.0)


def test_judge_healthy_unhealthy_and_insufficient() -> None:
    rng = random.Random(0)
    good = TrafficJudge("m", CFG)
    synthetic_traffic(good, "1", 300, 0.85, rng)
    synthetic_traffic(good, "2", 40, 0.85, rng)
    assert good(QUERY).state == "insufficient"
    synthetic_traffic(good, "2", 160, 0.85, rng)
    verdict = good(QUERY)
    assert verdict.state == "healthy" and verdict.events == 200
    assert verdict.evidence["stable_events"] == 300

    wrong = TrafficJudge("m", CFG)
    synthetic_traffic(wrong, "1", 300, 0.85, rng)
    synthetic_traffic(wrong, "2", 60, 0.15, rng)  # swapped labels: breach before min_events
    verdict = wrong(QUERY)
    assert verdict.state == "unhealthy" and "accuracy" in verdict.reason

    slow = TrafficJudge("m", CFG)
    synthetic_traffic(slow, "1", 300, 0.85, rng, latency_ms=5)
    synthetic_traffic(slow, "2", 60, 0.85, rng, latency_ms=40)
    assert "x stable" in slow(QUERY).reason

    failing = TrafficJudge("m", CFG)
    synthetic_traffic(failing, "2", 100, 0.85, rng, error_rate=0.2)
    assert "error rate" in failing(QUERY).reason

    old = TrafficJudge("m", CFG)  # events from before the canary began do not count
    synthetic_traffic(old, "2", 300, 0.85, rng, ts=10.0)
    assert old(QUERY).events == 0


def test_judge_does_not_roll_back_equal_versions_on_noise() -> None:
    """200 seeded canaries as accurate as stable, judged on the minimum labels: the one-sided
    test at z=2.33 allows ~1% false alarms; assert well under 5%."""
    rng = random.Random(42)
    alarms = 0
    for _ in range(200):
        judge = TrafficJudge("m", CFG)
        synthetic_traffic(judge, "1", 150, 0.8, rng)
        synthetic_traffic(judge, "2", 100, 0.8, rng)
        alarms += judge(QUERY).state == "unhealthy"
    assert alarms <= 10


def test_verdict_contract_validates() -> None:
    with pytest.raises(ValueError):
        CanaryVerdict("fine", "", 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        CanaryVerdict("healthy", "", -1)
    with pytest.raises(ValueError):
        CanaryQuery("m", 0, None, 0.0)


def test_micro_batcher_batches_concurrent_requests() -> None:
    calls: list[int] = []
    lock = threading.Lock()

    def run(items: Sequence[int]) -> list[int]:
        with lock:
            calls.append(len(items))
        threading.Event().wait(0.01)  # a model call that takes a moment
        return [x * 2 for x in items]

    async def main() -> list[int]:
        with ThreadPoolExecutor(1) as pool:
            batcher: MicroBatcher[int, int] = MicroBatcher(run, pool, max_batch=8)
            out = await asyncio.gather(*(batcher.submit(i) for i in range(40)))
            await batcher.close()
            return list(out)

    assert asyncio.run(main()) == [i * 2 for i in range(40)]
    assert sum(calls) == 40 and max(calls) <= 8 and len(calls) < 40


def test_micro_batcher_fails_only_its_batch() -> None:
    def run(items: Sequence[int]) -> list[int]:
        if 3 in items:
            raise RuntimeError("bad input")
        return list(items)

    async def main() -> tuple[object, int]:
        with ThreadPoolExecutor(1) as pool:
            batcher: MicroBatcher[int, int] = MicroBatcher(run, pool, max_batch=1)
            results = await asyncio.gather(batcher.submit(3), batcher.submit(4),
                                           return_exceptions=True)
            await batcher.close()
            return results[0], results[1]  # type: ignore[return-value]

    failed, served = asyncio.run(main())
    assert isinstance(failed, RuntimeError) and served == 4
