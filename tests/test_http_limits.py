"""The daemon's HTTP surface under abuse, over real HTTP: oversized bodies get 413 and change
nothing, /docs is off unless enabled, errors carry no traceback, and a failed step's traceback
and log tail are shown only to the on-call token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from policy_fixtures import engine, evaluation
from prometheus_client import CollectorRegistry

from daemon.act.api import create_router
from daemon.act.runs import RunState
from daemon.act.store import StateStore
from daemon.http import ApiServer, create_app

TOKEN = "http-limits-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[str, StateStore]]:
    store = StateStore(tmp_path / "state.db")
    eng = engine(store, tmp_path / "log", hold=1, mode="approve")
    eng.on_evaluation(evaluation("m", 0, {"drift.distribution[x]": True}))
    app = create_app(CollectorRegistry(), lambda: (True, ""), lambda: (True, ""),
                     [create_router(store, eng, TOKEN)], max_body_bytes=4096)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret path /srv/data in a traceback")

    server = ApiServer(app).start()
    yield server.url, store
    server.stop()
    store.close()


def test_an_oversized_body_gets_413_and_changes_nothing(api: tuple[str, StateStore]) -> None:
    url, store = api
    (run,) = store.list_runs()
    big = {"reason": "x" * 10_000}
    r = httpx.post(f"{url}/api/v1/runs/{run.id}/approve", headers=AUTH, json=big)
    assert r.status_code == 413 and "4096 bytes" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: caught while reading
        yield b'{"reason": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    r = httpx.post(f"{url}/api/v1/runs/{run.id}/approve", headers=AUTH, content=chunks())
    assert r.status_code == 413
    assert store.get_run(run.id).state is RunState.PENDING_APPROVAL  # type: ignore[union-attr]
    ok = httpx.post(f"{url}/api/v1/runs/{run.id}/approve", headers=AUTH, json={"reason": "ok"})
    assert ok.status_code == 200


def test_docs_are_off_and_errors_carry_no_traceback(api: tuple[str, StateStore]) -> None:
    url, _ = api
    assert httpx.get(url + "/docs").status_code == 404
    assert httpx.get(url + "/openapi.json").status_code == 404
    r = httpx.get(url + "/boom")
    assert r.status_code == 500 and "secret" not in r.text and "Traceback" not in r.text
    app = create_app(CollectorRegistry(), lambda: (True, ""), lambda: (True, ""), docs=True)
    server = ApiServer(app).start()
    try:
        assert httpx.get(server.url + "/docs").status_code == 200
    finally:
        server.stop()


def test_a_failed_steps_traceback_is_for_on_call_only(api: tuple[str, StateStore]) -> None:
    url, store = api
    (run,) = store.list_runs()
    store.transition(run.id, RunState.FAILED, "runner", [RunState.PENDING_APPROVAL],
                     {"traceback": "Traceback ... /srv/secret", "log_tail": "OOM", "type": "X"})
    open_read = httpx.get(f"{url}/api/v1/runs/{run.id}").json()
    assert "/srv/secret" not in str(open_read) and "OOM" not in str(open_read)
    assert open_read["transitions"][-1]["evidence"]["type"] == "X"
    assert "/srv/secret" not in httpx.get(f"{url}/api/v1/audit").text
    full = httpx.get(f"{url}/api/v1/runs/{run.id}", headers=AUTH).json()
    assert full["transitions"][-1]["evidence"]["traceback"] == "Traceback ... /srv/secret"
