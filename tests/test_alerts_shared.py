"""Two instances on one shared store (SQLite file or PostgreSQL): an Alertmanager webhook that
lands on the instance that does not own the model is recorded there, de-duplicated across
both, and executed by the owner on the owner's snapshot; the non-owner runs nothing."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from policy_fixtures import TESTS
from prometheus_client import CollectorRegistry
from test_alerts_webhook import AUTH, TOKEN, payload

from daemon.act.control import ControlPlane
from daemon.act.runs import RunState
from daemon.act.store import StateStore
from daemon.config import parse_config
from daemon.http import ApiServer, create_app


def _instance(state_url: str, log: Path, name: str, owns: bool,
              snapshot: Path) -> tuple[ControlPlane, StateStore]:
    config = parse_config({
        "api": {"token": TOKEN, "webhook_token": TOKEN},
        "state": {"url": state_url} if "://" in state_url else {"path": state_url},
        "models": [{"name": "m", "policy": {"pipeline": "quick", "mode": "auto"}}],
        "pipelines": {"quick": {"steps": [
            {"name": "s0", "uses": "runner_quick_steps:record", "params": {"log": str(log)}}]}},
        "runner": {"poll_interval": 0.05, "instance_id": name, "work_dir": str(log.parent)},
    })
    store = StateStore(config.state.location)
    control = ControlPlane(config, store, snapshot_provider=lambda model: snapshot,
                           owns=lambda model: owns, worker_env={"PYTHONPATH": str(TESTS)})
    return control, store


def test_an_alert_to_a_non_owner_becomes_a_run_the_owner_executes(state_url: str,
                                                                  tmp_path: Path) -> None:
    log = tmp_path / "steps.log"
    theirs, mine = tmp_path / "a-snapshot.jsonl", tmp_path / "b-snapshot.jsonl"
    a, store_a = _instance(state_url, log, "a", owns=False, snapshot=theirs)
    b, store_b = _instance(state_url, log, "b", owns=True, snapshot=mine)
    servers = [ApiServer(create_app(CollectorRegistry(), lambda: (True, ""), lambda: (True, ""),
                                    [c.router])).start() for c in (a, b)]
    a.start()
    try:
        answer = httpx.post(servers[0].url + "/api/v1/alerts", json=payload(), headers=AUTH)
        assert answer.status_code == 200
        (run_id,) = answer.json()["runs_created"]
        run = store_b.get_run(run_id)
        assert run is not None and run.snapshot_path is None  # a has no windows for m
        assert run.evidence["snapshot_deferred"] is True
        # Alertmanager sends the same group to the other instance: one store, one alert.
        again = httpx.post(servers[1].url + "/api/v1/alerts", json=payload(), headers=AUTH)
        assert again.json()["duplicates"] == 1
        time.sleep(0.5)  # a polls ten times meanwhile, and must leave the run alone
        assert store_a.get_run(run_id).state is RunState.QUEUED  # type: ignore[union-attr]
        b.start()
        deadline = time.monotonic() + 30
        while store_b.get_run(run_id).state is not RunState.SUCCEEDED:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, store_b.get_run(run_id)
            time.sleep(0.05)
    finally:
        for c in (a, b):
            c.stop()
        for s in servers:
            s.stop()
    (step,) = store_b.steps(run_id)
    assert step.evidence["snapshot"] == str(mine), "trained on the owner's windows"
    assert store_b.get_run(run_id).snapshot_path == str(mine)  # type: ignore[union-attr]
    leased = [e.actor for e in store_b.list_audit(run_id=run_id) if e.action == "run.leased"]
    assert leased == ["b"]
    taken = [e for e in store_b.list_audit(run_id=run_id) if e.action == "run.snapshot_taken"]
    assert len(taken) == 1 and taken[0].evidence["snapshot_path"] == str(mine)
    store_a.close()
    store_b.close()
