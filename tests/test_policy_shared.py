"""Cooldown and daily cap hold across instances sharing one PostgreSQL store: several
instances' engines, each hit by many alerts at once, create exactly what one engine would."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from policy_fixtures import quick_pipeline

from daemon.act.config import ModelPolicy
from daemon.act.policy import PolicyEngine
from daemon.act.store import StateStore
from harness.postgres import Cluster


@pytest.mark.parametrize(("policy", "expected"), [
    ({"cooldown": 3600, "mode": "dry-run"}, 1),        # the first run starts the cooldown
    ({"cooldown": 0, "max_runs_per_day": 2, "mode": "dry-run"}, 2),  # dry runs end at once
])
def test_gates_hold_across_instances(postgres: Cluster, tmp_path: Path,
                                     policy: dict[str, object], expected: int) -> None:
    url = postgres.create_database()
    stores = [StateStore(url) for _ in range(3)]  # three instances, one database
    engines = [PolicyEngine(s, {"m": ModelPolicy(pipeline="quick", **policy)},  # type: ignore[arg-type]
                            {"quick": quick_pipeline(tmp_path / "log")}) for s in stores]
    start = threading.Barrier(12)

    def fire(engine: PolicyEngine, n: int) -> None:
        start.wait()
        engine.on_alert("m", None, f"fp-{n}", "2026-11-29T01:00:00Z", {"n": n})

    threads = [threading.Thread(target=fire, args=(engines[n % 3], n)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(stores[0].list_runs(model="m")) == expected
    for s in stores:
        s.close()
