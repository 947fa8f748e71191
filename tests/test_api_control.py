"""The control API over real HTTP (uvicorn on loopback): reads are open, mutations need the
bearer token (401 and nothing changes without it), bad bodies get 400 with a reason."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from policy_fixtures import engine, evaluation
from prometheus_client import CollectorRegistry

from daemon.act.api import create_router
from daemon.act.policy import PolicyEngine
from daemon.act.runs import RunState
from daemon.act.store import StateStore
from daemon.http import ApiServer, create_app

TOKEN = "s3cret-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BREACH = {"drift.distribution[x]": True, "latency.p95_ms": False}


class Env:
    def __init__(self, store: StateStore, eng: PolicyEngine, url: str) -> None:
        self.store, self.engine, self.url = store, eng, url
        self.woken = 0

    def state(self) -> tuple[Any, ...]:
        """Everything a request could change."""
        runs = [(r.id, r.state, r.next_step) for r in self.store.list_runs()]
        return runs, self.store.paused_models(), len(self.store.list_audit(limit=10_000))


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    store = StateStore(tmp_path / "state.db")
    eng = engine(store, tmp_path / "steps.log", hold=1, mode="approve")
    holder: list[Env] = []

    def wake() -> None:
        holder[0].woken += 1

    router = create_router(store, eng, TOKEN, on_change=wake)
    server = ApiServer(create_app(CollectorRegistry(), lambda: (True, "ok"),
                                  lambda: (True, "ok"), [router]), port=0).start()
    holder.append(Env(store, eng, server.url))
    yield holder[0]
    server.stop()
    store.close()


def _pending_run(env: Env) -> str:
    env.engine.on_evaluation(evaluation("m", 0, BREACH))
    (run,) = env.store.list_runs()
    assert run.state is RunState.PENDING_APPROVAL
    return run.id


MUTATIONS = ["/api/v1/runs/{run}/approve", "/api/v1/runs/{run}/reject",
             "/api/v1/models/m/pause", "/api/v1/models/m/resume", "/api/v1/alerts"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": TOKEN}], ids=["none", "wrong", "scheme"])
def test_mutations_without_the_token_get_401_and_change_nothing(env: Env,
                                                                headers: dict[str, str]) -> None:
    run_id = _pending_run(env)
    before = env.state()
    for path in MUTATIONS:
        r = httpx.post(env.url + path.format(run=run_id), headers=headers,
                       json={"version": "4", "status": "firing", "alerts": []})
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"
    assert env.state() == before
    assert env.woken == 0


def test_reads_metrics_and_health_need_no_token(env: Env) -> None:
    run_id = _pending_run(env)
    for path in ["/metrics", "/healthz", "/api/v1/status", "/api/v1/runs",
                 f"/api/v1/runs/{run_id}", "/api/v1/evaluations", "/api/v1/audit"]:
        assert httpx.get(env.url + path).status_code == 200, path


def test_no_configured_token_refuses_every_mutation(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    eng = engine(store, tmp_path / "log", hold=1)
    router = create_router(store, eng, token=None)
    server = ApiServer(create_app(CollectorRegistry(), lambda: (True, ""), lambda: (True, ""),
                                  [router])).start()
    try:
        r = httpx.post(server.url + "/api/v1/models/m/pause", headers={"Authorization": "Bearer x"})
        assert r.status_code == 401 and "no API token configured" in r.json()["detail"]
        assert store.paused_models() == {}
    finally:
        server.stop()
        store.close()


def test_each_credential_opens_only_its_own_endpoints(tmp_path: Path) -> None:
    """Alertmanager's credential cannot approve or pause; on-call's cannot post alerts."""
    store = StateStore(tmp_path / "state.db")
    eng = engine(store, tmp_path / "log", hold=1, mode="approve")
    hook = "alertmanager-token-0123456789"
    router = create_router(store, eng, TOKEN, webhook_token=hook)
    server = ApiServer(create_app(CollectorRegistry(), lambda: (True, ""), lambda: (True, ""),
                                  [router])).start()
    try:
        eng.on_evaluation(evaluation("m", 0, BREACH))
        (run,) = store.list_runs()
        as_hook = {"Authorization": f"Bearer {hook}"}
        for path in MUTATIONS[:4]:
            r = httpx.post(server.url + path.format(run=run.id), headers=as_hook)
            assert r.status_code == 401, path
        assert store.get_run(run.id).state is RunState.PENDING_APPROVAL  # type: ignore[union-attr]
        assert store.paused_models() == {}
        alert = {"version": "4", "status": "firing", "alerts": []}
        assert httpx.post(server.url + "/api/v1/alerts", headers=AUTH,
                          json=alert).status_code == 401
        assert httpx.post(server.url + "/api/v1/alerts", headers=as_hook,
                          json=alert).status_code == 200
    finally:
        server.stop()
        store.close()


def test_approve_then_approve_again_conflicts(env: Env) -> None:
    run_id = _pending_run(env)
    r = httpx.post(f"{env.url}/api/v1/runs/{run_id}/approve",
                   headers={**AUTH, "X-Lifeguard-Actor": "cli:alice"}, json={"reason": "looks ok"})
    # The actor is the credential's; what the client says about itself is only evidence.
    assert r.status_code == 200 and r.json() == {"id": run_id, "state": "queued",
                                                 "actor": "oncall"}
    assert env.woken == 1
    last = env.store.transitions(run_id)[-1]
    assert (last.actor, last.to_state, last.evidence) == (
        "oncall", RunState.QUEUED, {"reason": "looks ok", "declared_by": "cli:alice"})
    again = httpx.post(f"{env.url}/api/v1/runs/{run_id}/approve", headers=AUTH)
    assert again.status_code == 409 and "is queued" in again.json()["detail"]
    assert httpx.post(f"{env.url}/api/v1/runs/nope/reject", headers=AUTH).status_code == 404


@pytest.mark.parametrize(("body", "reason"), [
    (b"{not json", "body is not JSON"),
    (b"[1, 2]", "body must be a JSON object"),
    (b'{"reason": 3}', "reason must be a string"),
    (b'{"reasn": "typo"}', "unknown field(s): reasn"),
])
def test_malformed_mutation_body_gets_400_and_changes_nothing(env: Env, body: bytes,
                                                             reason: str) -> None:
    run_id = _pending_run(env)
    before = env.state()
    r = httpx.post(f"{env.url}/api/v1/runs/{run_id}/approve", headers=AUTH, content=body)
    assert r.status_code == 400 and reason in r.json()["detail"]
    assert env.state() == before


def test_pause_resume_and_status(env: Env) -> None:
    _pending_run(env)
    r = httpx.post(f"{env.url}/api/v1/models/m/pause", headers=AUTH,
                   json={"reason": "bad labels", "actor": "bob"})
    assert r.json() == {"model": "m", "paused": True, "changed": True}
    (model,) = httpx.get(f"{env.url}/api/v1/status").json()["models"]
    assert model["paused"]["actor"] == "oncall" and model["paused"]["reason"] == "bad labels"
    assert model["active_run"]["state"] == "pending_approval"
    assert model["last_evaluation"]["breaches"][0]["key"] == "drift.distribution[x]"
    assert model["deployed_version"] == "v1" and model["mode"] == "approve"
    assert httpx.post(f"{env.url}/api/v1/models/m/resume", headers=AUTH).json()["changed"]
    assert httpx.get(f"{env.url}/api/v1/status").json()["models"][0]["paused"] is None
    actions = [e["action"] for e in httpx.get(f"{env.url}/api/v1/audit?model=m").json()["entries"]]
    assert actions[-2:] == ["model.paused", "model.resumed"]


def test_run_detail_and_filters(env: Env) -> None:
    run_id = _pending_run(env)
    detail = httpx.get(f"{env.url}/api/v1/runs/{run_id}").json()
    assert detail["state"] == "pending_approval" and detail["n_steps"] == 2
    assert detail["transitions"][0]["to_state"] == "pending_approval"
    assert detail["evidence"]["evaluation_ids"] == [evaluation("m", 0, BREACH).id]
    assert httpx.get(f"{env.url}/api/v1/runs?state=running").json()["runs"] == []
    assert httpx.get(f"{env.url}/api/v1/runs?state=bogus").status_code == 400
    ev_id = detail["evidence"]["evaluation_ids"][0]
    ev = httpx.get(f"{env.url}/api/v1/evaluations/{ev_id}").json()
    assert {r["key"] for r in ev["results"]} == {"drift.distribution[x]", "latency.p95_ms"}
