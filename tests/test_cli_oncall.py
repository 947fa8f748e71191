"""The on-call CLI against a real daemon API on loopback: status, runs, show, approve, reject,
pause, resume, audit; a missing token is an error that says so, and changes nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from policy_fixtures import engine, evaluation
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from daemon.act.api import create_router
from daemon.act.runs import RunState
from daemon.act.store import StateStore
from daemon.cli import app
from daemon.cli.oncall import parse_since, summarize
from daemon.http import ApiServer, create_app

TOKEN = "cli-token-0123456789"
BREACH = {"drift.distribution[x]": True}


@pytest.fixture
def daemon_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StateStore]:
    store = StateStore(tmp_path / "state.db")
    eng = engine(store, tmp_path / "steps.log", hold=1, mode="approve")
    server = ApiServer(create_app(CollectorRegistry(), lambda: (True, ""), lambda: (True, ""),
                                  [create_router(store, eng, TOKEN)])).start()
    monkeypatch.setenv("LIFEGUARD_URL", server.url)
    monkeypatch.delenv("LIFEGUARD_TOKEN", raising=False)
    monkeypatch.setenv("COLUMNS", "200")  # rich tables wide enough to assert on
    for i, model in enumerate(["m", "m"]):
        eng.on_evaluation(evaluation(model, i, BREACH))
    yield store
    server.stop()
    store.close()


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_status_runs_and_show_read_without_a_token(daemon_api: StateStore) -> None:
    (run,) = daemon_api.list_runs()
    code, out = cli("status")
    assert code == 0
    assert "m" in out and "drift.distribution[x]" in out and "pending_approval" in out
    code, out = cli("runs", "--model", "m")
    assert code == 0 and run.id in out and "0/2" in out
    code, out = cli("runs", "--model", "other")
    assert code == 0 and run.id not in out
    code, out = cli("show", run.id)
    assert code == 0 and "transitions" in out and "pending_approval" in out and "s1" in out
    code, out = cli("show", run.id, "--json")
    assert json.loads(out)["id"] == run.id


def test_approve_needs_the_token_then_queues_the_run(daemon_api: StateStore,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    (run,) = daemon_api.list_runs()
    code, out = cli("approve", run.id)
    assert code == 1 and "HTTP 401" in out and "LIFEGUARD_TOKEN" in out
    assert daemon_api.get_run(run.id).state is RunState.PENDING_APPROVAL  # type: ignore[union-attr]
    code, out = cli("approve", run.id, "--token", TOKEN, "--reason", "checked the data")
    assert code == 0 and f"{run.id}: queued" in out
    last = daemon_api.transitions(run.id)[-1]
    assert last.actor == "oncall" and last.evidence["reason"] == "checked the data"
    assert last.evidence["declared_by"].startswith("cli")
    monkeypatch.setenv("LIFEGUARD_TOKEN", TOKEN)
    code, out = cli("reject", run.id)
    assert code == 0 and "rejected" in out
    code, out = cli("approve", run.id)
    assert code == 1 and "HTTP 409" in out


def test_pause_resume_and_audit(daemon_api: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFEGUARD_TOKEN", TOKEN)
    assert cli("pause", "m", "--reason", "label outage") == (0, "m: paused\n")
    assert cli("pause", "m")[1] == "m: paused (already)\n"
    code, out = cli("status")
    assert "PAUSED" in out
    assert cli("resume", "m") == (0, "m: resumed\n")
    code, out = cli("audit", "--since", "1h", "--model", "m")
    assert code == 0
    for action in ("evaluation.breached", "run.pending_approval", "model.paused",
                   "model.resumed"):
        assert action in out
    code, out = cli("audit", "--since", "2999-01-01T00:00:00Z", "--json")
    assert json.loads(out)["entries"] == []


def test_unreachable_daemon_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = cli("status", "--url", "http://127.0.0.1:9")
    assert code == 2 and "cannot reach lifeguard at http://127.0.0.1:9" in out


def test_parse_since_forms() -> None:
    now = time.time()
    assert abs(parse_since("2h") - (now - 7200)) < 5
    assert parse_since("1700000000") == 1_700_000_000
    assert parse_since("2023-11-14T22:13:20Z") == 1_700_000_000


def test_evidence_summary_is_one_scannable_line() -> None:
    evidence = {"breaches": [{"key": "drift.length[input_text]", "statistic": 0.4}],
                "artifacts": {"model": {"path": "/a", "sha256": "ab"}, "onnx": {}},
                "error": None, "attempt": 2, "nested": {"a": 1},
                "log_tail": "Traceback...\nRuntimeError: CUDA out of memory\n"}
    assert summarize(evidence, width=200) == (
        "breaches=drift.length[input_text] artifacts=model,onnx "
        "attempt=2 nested={…} log_tail=RuntimeError: CUDA out of memory")
    assert len(summarize({"k": "x" * 500}, width=50)) == 50
