"""Two daemon processes, one broker, one PostgreSQL: a webhook to either instance becomes one
run executed by the model's owner; kill -9 of the owner in the middle of the run → the
survivor takes the partition and, once the lease lapses, the run from its last finished step;
every step's effect (the last one standing in for the deploy) applies exactly once."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from policy_fixtures import TESTS
from procs import DaemonProcess, metric_sum, wait_until
from test_alerts_webhook import payload

from daemon.ingest.broker import LocalBroker, ensure_topics
from harness.postgres import Cluster

TOKEN = "scale-t0ken-0123456789"


def _config(bootstrap: str, topic: str, url: str, name: str, tmp: Path) -> dict:
    log = str(tmp / "steps.log")
    step = {"uses": "runner_quick_steps:record", "max_attempts": 1,
            "params": {"log": log, "hold": "before", "hold_s": 60}}
    return {
        "kafka": {"bootstrap_servers": [bootstrap], "topics": [topic], "group_id": topic,
                  "dead_letter_topic": f"{topic}.dlq", "partitions": 3,
                  "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000},
        "api": {"token": TOKEN, "webhook_token": TOKEN},
        "state": {"url": url},
        "models": [{"name": "m", "policy": {"pipeline": "quick", "mode": "auto"}}],
        # Step 1 holds on its first start: the owner is killed there.
        "pipelines": {"quick": {"steps": [
            {"name": "s0", **step, "params": {"log": log}}, {"name": "s1", **step},
            {"name": "deploy", **step, "params": {"log": log}}]}},
        "runner": {"poll_interval": 0.1, "instance_id": name, "lease_ttl": 3,
                   "work_dir": str(tmp / "runs")},
    }


def _leases(run: dict) -> list[tuple[str, int]]:
    return [(e["actor"], e["evidence"]["token"]) for e in run["audit"]
            if e["action"] == "run.leased"]


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.slow
@pytest.mark.integration
def test_kill9_of_the_owner_mid_run_the_survivor_finishes_it_once(
        broker: LocalBroker, postgres: Cluster, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    topic, url = "scale-out", postgres.create_database()
    ensure_topics(broker.bootstrap, {topic: 3, f"{topic}.dlq": 1})
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p))  # the steps' module
    daemons = {name: DaemonProcess(tmp_path, _config(broker.bootstrap, topic, url, name,
                                                      tmp_path), name) for name in ("a", "b")}
    try:
        for d in daemons.values():
            d.start()
        wait_until(lambda: all(d.count("lifeguard_assigned_partitions") >= 1
                               for d in daemons.values()), 60, what="both in the group")
        wait_until(lambda: sum(metric_sum(d.metrics(), "lifeguard_model_owned", model="m")
                               for d in daemons.values()) == 1, 30, what="exactly one owner")
        answer = httpx.post(daemons["a"].url + "/api/v1/alerts", json=payload(),
                            headers={"Authorization": f"Bearer {TOKEN}"}).json()
        (run_id,) = answer["runs_created"]
        log = tmp_path / "steps.log"
        wait_until(lambda: any(ln.startswith(f"holding {run_id} 1") for ln in _lines(log)),
                   60, what="step 1 to start")
        before = _leases(httpx.get(daemons["b"].url + f"/api/v1/runs/{run_id}").json())
        owner = before[-1][0]  # the group may have settled once more before: then two
        survivor = "b" if owner == "a" else "a"
        daemons[owner].kill()  # SIGKILL: no lease released, no offsets committed
        wait_until(lambda: httpx.get(daemons[survivor].url + f"/api/v1/runs/{run_id}")
                   .json()["state"] in ("succeeded", "failed"), 90, 0.5,
                   what="the survivor to finish the run")
        detail = httpx.get(daemons[survivor].url + f"/api/v1/runs/{run_id}").json()
        text = daemons[survivor].metrics()
    finally:
        for d in daemons.values():
            d.kill()
    assert detail["state"] == "succeeded", detail
    assert _leases(detail) == [*before, (survivor, before[-1][1] + 1)]
    effects = _lines(tmp_path / "effects.log")
    assert sorted(effects) == sorted(f"effect {run_id} {i}" for i in range(3)), effects
    starts = [ln.split()[2] for ln in _lines(log) if ln.startswith("start")]
    assert starts.count("0") == 1, "the finished step is not run again"
    assert starts.count("2") == 1, "exactly one deploy"
    assert metric_sum(text, "lifeguard_assigned_partitions") == 3, "the survivor has them all"
    assert metric_sum(text, "lifeguard_model_owned", model="m") == 1
