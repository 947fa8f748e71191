"""The on-call CLI against a real daemon API on loopback: status, runs, show, approve, reject,
pause, resume, audit; a missing token is an error that says so, and changes nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from policy_fixtures import engine, evaluation, queued_run, quick_steps
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
REFERENCES = {"m": {"kind": "first_n", "first_n": 400}}


@pytest.fixture
def daemon_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StateStore]:
    store = StateStore(tmp_path / "state.db")
    eng = engine(store, tmp_path / "steps.log", hold=1, mode="approve")
    server = ApiServer(create_app(CollectorRegistry(), lambda: (True, ""), lambda: (True, ""),
                                  [create_router(store, eng, TOKEN, references=REFERENCES)])
                       ).start()
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
    for action in ("breach.began", "run.pending_approval", "model.paused",
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


def _lines_fit(out: str, width: int = 80) -> None:
    assert max(len(line) for line in out.splitlines()) <= width, out


def test_ids_and_breach_keys_stay_whole_at_80_columns(daemon_api: StateStore, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    long_keys = {"accuracy.accuracy_vs_reference": True, "drift.distribution[input_text]": True,
                 "latency.p95_ms": True}
    daemon_api.add_evaluation(evaluation("sentiment-classifier-eu", 5, long_keys))
    for trigger in ("a", "b", "c"):
        queued_run(daemon_api, "sentiment-classifier-eu", quick_steps(tmp_path / "log"),
                   trigger=trigger)
    ids = [r.id for r in daemon_api.list_runs()]
    assert len(ids) == 4
    code, out = cli("runs")
    assert code == 0
    _lines_fit(out)
    for run_id in ids:
        assert run_id in out, (run_id, out)
    code, out = cli("status")
    assert code == 0
    _lines_fit(out)
    for key in [*long_keys, *BREACH]:
        assert key in out, (key, out)
    for run_id in (daemon_api.list_runs(model="m")[0].id,
                   daemon_api.list_runs(model="sentiment-classifier-eu")[0].id):
        assert run_id in out, (run_id, out)
    code, out = cli("audit")
    assert code == 0 and all(run_id in out for run_id in ids), out


def test_a_unique_prefix_names_a_run_and_an_ambiguous_one_lists_the_matches(
        daemon_api: StateStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFEGUARD_TOKEN", TOKEN)
    (pending,) = daemon_api.list_runs()
    other = queued_run(daemon_api, "m2", quick_steps(tmp_path / "log"), trigger="x")
    code, out = cli("approve", "run-")
    assert code == 1 and "ambiguous" in out and pending.id in out and other in out
    assert daemon_api.get_run(pending.id).state is RunState.PENDING_APPROVAL  # type: ignore[union-attr]
    code, out = cli("approve", "run-zzz")
    assert code == 1 and "no run id starts with 'run-zzz'" in out
    short = next(pending.id[:n] for n in range(5, len(pending.id))
                 if not other.startswith(pending.id[:n]))
    code, out = cli("show", short)
    assert code == 0 and pending.id in out
    code, out = cli("approve", short, "--reason", "ok")
    assert code == 0 and f"{pending.id}: queued" in out
    assert daemon_api.get_run(pending.id).state is RunState.QUEUED  # type: ignore[union-attr]
    short_other = next(other[:n] for n in range(5, len(other))
                       if not pending.id.startswith(other[:n]))
    code, out = cli("reject", short_other)
    assert code == 0 and f"{other}: rejected" in out


def test_show_gives_each_breached_detector_in_numbers(daemon_api: StateStore,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    (run,) = daemon_api.list_runs()
    (evaluation_id,) = run.evidence["evaluation_ids"]
    code, out = cli("show", run.id)
    assert code == 0
    _lines_fit(out)
    assert f"evaluation {evaluation_id}" in out
    assert "the first 400 events version v1 served" in out
    row = next(line for line in out.splitlines() if "drift.distribution[x]" in line
               and "0.5" in line)
    for value in ("0.5", "0.3", "above", "500/500"):
        assert value in row, row
    code, out = cli("show", run.id[:10], "--json")
    (ev,) = json.loads(out)["evaluations"]
    assert ev["id"] == evaluation_id and ev["reference"] == {
        "kind": "first_n", "first_n": 400, "version": "v1"}
    assert ev["breaches"] == [{"key": "drift.distribution[x]", "statistic": 0.5,
                               "threshold": 0.3, "direction": "above", "n_reference": 500,
                               "n_current": 500, "method": None}]
