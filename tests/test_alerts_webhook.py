"""Alertmanager webhooks (payload v4) over real HTTP: a firing alert starts one run; resends
and repeats start none; resolved alerts are recorded, not acted on; bad bodies get 400."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from policy_fixtures import quick_pipeline
from prometheus_client import CollectorRegistry

from daemon.act.alerts import AlertPayloadError, parse_webhook
from daemon.act.api import create_router
from daemon.act.config import ModelPolicy
from daemon.act.policy import PolicyEngine
from daemon.act.runs import RunState
from daemon.act.store import StateStore
from daemon.http import ApiServer, create_app

TOKEN = "webhook-t0ken-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def payload(status: str = "firing", fingerprint: str = "fp1",
            starts_at: str = "2026-11-29T01:00:00.000Z", **labels: str) -> dict[str, Any]:
    alert_labels = {"alertname": "AccuracyDrop", "model": "m", **labels}
    return {
        "version": "4", "groupKey": '{}:{alertname="AccuracyDrop"}', "truncatedAlerts": 0,
        "status": status, "receiver": "lifeguard", "groupLabels": {"alertname": "AccuracyDrop"},
        "commonLabels": alert_labels, "commonAnnotations": {}, "externalURL": "http://am:9093",
        "alerts": [{"status": status, "labels": alert_labels,
                    "annotations": {"summary": "accuracy below floor"},
                    "startsAt": starts_at, "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://prom/graph", "fingerprint": fingerprint}],
    }


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[StateStore, str]]:
    store = StateStore(tmp_path / "state.db")
    pipelines = {"quick": quick_pipeline(tmp_path / "log"),
                 "other": quick_pipeline(tmp_path / "log", n_steps=1)}
    eng = PolicyEngine(store, {"m": ModelPolicy(pipeline="quick", mode="auto", cooldown=0,
                                                alert_pipelines=["other"]),
                               "quiet": ModelPolicy(pipeline="quick", alerts=False)}, pipelines)
    server = ApiServer(create_app(CollectorRegistry(), lambda: (True, ""), lambda: (True, ""),
                                  [create_router(store, eng, None, webhook_token=TOKEN)])).start()
    yield store, server.url + "/api/v1/alerts"
    server.stop()
    store.close()


def test_firing_alert_starts_one_run_and_resends_start_none(
    setup: tuple[StateStore, str],
) -> None:
    store, url = setup
    first = httpx.post(url, json=payload(), headers=AUTH)
    assert first.status_code == 200
    assert len(first.json()["runs_created"]) == 1 and first.json()["duplicates"] == 0
    (run,) = store.list_runs()
    assert run.source == "alert" and run.pipeline == "quick"
    assert run.evidence["fingerprint"] == "fp1" and run.evidence["groupKey"]
    # Alertmanager resends the same group (repeat_interval) and retries on errors.
    for _ in range(3):
        again = httpx.post(url, json=payload(), headers=AUTH).json()
        assert again["duplicates"] == 1 and again["runs_created"] == []
    assert len(store.list_runs()) == 1


def test_same_alert_firing_again_later_is_a_new_trigger_held_by_the_gates(
    setup: tuple[StateStore, str],
) -> None:
    store, url = setup
    httpx.post(url, json=payload(), headers=AUTH)
    later = httpx.post(url, json=payload(starts_at="2026-11-29T05:00:00Z"), headers=AUTH).json()
    assert later["runs_created"] == [] and "still active" in later["ignored"][0]
    (run,) = store.list_runs()
    store.transition(run.id, RunState.SUCCEEDED, "test", [RunState.QUEUED])
    third = httpx.post(url, json=payload(starts_at="2026-11-29T09:00:00Z"), headers=AUTH).json()
    assert len(third["runs_created"]) == 1


def test_resolved_alert_is_recorded_not_acted_on(setup: tuple[StateStore, str]) -> None:
    store, url = setup
    r = httpx.post(url, json=payload(status="resolved"), headers=AUTH).json()
    assert r["resolved"] == 1 and r["runs_created"] == []
    assert store.list_runs() == []
    assert [a.action for a in store.list_audit()] == ["alert.resolved"]


def test_labels_choose_pipeline_and_unknown_models_are_ignored(
    setup: tuple[StateStore, str],
) -> None:
    store, url = setup
    r = httpx.post(url, json=payload(pipeline="other"), headers=AUTH).json()
    assert store.get_run(r["runs_created"][0]).pipeline == "other"  # type: ignore[union-attr]
    for body, reason in [(payload(fingerprint="fp2", model="ghost"), "no policy"),
                         (payload(fingerprint="fp3", model="quiet"), "alerts disabled"),
                         (payload(fingerprint="fp4", pipeline="nope"), "unknown pipeline")]:
        answer = httpx.post(url, json=body, headers=AUTH).json()
        assert answer["runs_created"] == [] and reason in answer["ignored"][0]
    assert len(store.list_runs()) == 1


def test_an_alert_cannot_start_another_models_pipeline(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    pipelines = {"mine": quick_pipeline(tmp_path / "log"),
                 "theirs": quick_pipeline(tmp_path / "log", n_steps=1)}
    eng = PolicyEngine(store, {"m": ModelPolicy(pipeline="mine", mode="auto", cooldown=0),
                               "n": ModelPolicy(pipeline="theirs", mode="auto")}, pipelines)
    server = ApiServer(create_app(CollectorRegistry(), lambda: (True, ""), lambda: (True, ""),
                                  [create_router(store, eng, None, webhook_token=TOKEN)])).start()
    try:
        url = server.url + "/api/v1/alerts"
        refused = httpx.post(url, json=payload(pipeline="theirs"), headers=AUTH).json()
        assert refused["runs_created"] == []
        assert "'theirs' is not one of model 'm'" in refused["ignored"][0]
        assert store.list_runs() == []
        ok = httpx.post(url, json=payload(fingerprint="fp2", pipeline="mine"), headers=AUTH)
        (run,) = store.list_runs()
        assert ok.json()["runs_created"] == [run.id] and run.pipeline == "mine"
        # The audit's actor is the credential's, whatever the payload says.
        actors = {t.actor for t in store.transitions(run.id)}
        assert actors <= {"alertmanager", "policy"}, actors
    finally:
        server.stop()
        store.close()


def _mutated(path: str, value: Any) -> bytes:
    body = copy.deepcopy(payload())
    *parents, last = path.split(".")
    node: Any = body
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return json.dumps(body).encode()


@pytest.mark.parametrize(("body", "reason"), [
    (b"", "body is not JSON"),
    (b'"text"', "body must be a JSON object"),
    (_mutated("version", "3"), "version: Input should be '4'"),
    (_mutated("alerts.0.fingerprint", KeyError), "alerts.0.fingerprint: Field required"),
    (_mutated("alerts.0.status", "pending"), "alerts.0.status"),
    (_mutated("alerts.0.startsAt", "yesterday"), "not an RFC 3339 time"),
    (_mutated("alerts.0.labels", {"model": 3}), "alerts.0.labels.model"),
    (_mutated("alerts", {}), "alerts: Input should be a valid list"),
])
def test_malformed_webhook_gets_400_with_reason_and_changes_nothing(
    setup: tuple[StateStore, str], body: bytes, reason: str,
) -> None:
    store, url = setup
    r = httpx.post(url, content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 400
    assert reason in r.json()["detail"]
    assert store.list_runs() == [] and store.list_audit() == []


def test_parse_keeps_unknown_fields_out_and_validates_the_rest() -> None:
    parsed = parse_webhook(json.dumps({**payload(), "newField": 1}).encode())
    assert parsed.alerts[0].fingerprint == "fp1"
    with pytest.raises(AlertPayloadError, match="alerts: Field required"):
        parse_webhook(b'{"version": "4", "status": "firing"}')


def test_an_alert_that_failed_to_act_is_retried_not_dropped(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    calls: list[str] = []

    def flaky_snapshot(model: str) -> Path:
        calls.append(model)
        if len(calls) == 1:
            raise OSError("labelled data store unreachable")
        return tmp_path / "snap.jsonl"

    eng = PolicyEngine(store, {"m": ModelPolicy(pipeline="quick", mode="auto")},
                       {"quick": quick_pipeline(tmp_path / "log")},
                       snapshot_provider=flaky_snapshot)
    server = ApiServer(create_app(CollectorRegistry(), lambda: (True, ""), lambda: (True, ""),
                                  [create_router(store, eng, None, webhook_token=TOKEN)])).start()
    try:
        first = httpx.post(server.url + "/api/v1/alerts", json=payload(), headers=AUTH)
        assert first.status_code == 500 and store.list_runs() == []
        # Alertmanager retries a failed notification: this time it must be acted on.
        retry = httpx.post(server.url + "/api/v1/alerts", json=payload(), headers=AUTH)
        assert retry.status_code == 200 and len(retry.json()["runs_created"]) == 1
        failed = [a for a in store.list_audit() if a.action == "trigger.failed"]
        assert "labelled data store unreachable" in failed[0].evidence["error"]
    finally:
        server.stop()
        store.close()
