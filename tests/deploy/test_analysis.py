"""The canary-analysis endpoint as an external controller (Argo Rollouts' web provider) reads
it: JSON with the verdict, stable and canary metrics."""

from __future__ import annotations

import random
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from deploy.analysis import canary_analysis_router
from deploy.config import CanaryConfig
from deploy.judge import TrafficJudge
from deploy.rollout_store import RolloutStore
from harness.replicas import synthetic_traffic

CFG = CanaryConfig(min_events=100, min_labelled=50)


def test_analysis_reports_the_active_canary(tmp_path: Path) -> None:
    rng = random.Random(3)
    judge = TrafficJudge("m", CFG)
    synthetic_traffic(judge, "1", 200, 0.85, rng, ts=2000.0)
    synthetic_traffic(judge, "2", 80, 0.1, rng, ts=2000.0)
    store = RolloutStore(tmp_path / "state.db")
    record = store.create("m", 1, 2, "canary", "canary", {"http://a": 2}, {"http://a": 2})
    store.update(record, canary_since=1999.0)
    app = FastAPI()
    app.include_router(canary_analysis_router(judge, store))
    client = TestClient(app)

    body = client.get("/canary/m").json()
    assert body["verdict"] == "unhealthy" and body["value"] == 0
    assert (body["canary_version"], body["stable_version"]) == (2, 1)
    assert body["rollout_id"] == record.id and body["since"] == 1999.0
    assert body["evidence"]["stable_accuracy"] > 0.7 > 0.3 > body["evidence"]["canary_accuracy"]

    explicit = client.get("/canary/m", params={"canary": 1, "since": 1999.0}).json()
    assert explicit["verdict"] == "healthy" and explicit["value"] == 1
    early = client.get("/canary/m", params={"canary": 1, "since": 2001.0}).json()
    assert early["verdict"] == "insufficient" and early["value"] is None

    assert client.get("/canary/other").status_code == 404  # no rollout in progress
    assert client.get("/canary/..bad").status_code == 400
