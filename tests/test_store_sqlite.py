"""The state store on both backends (a real SQLite file, a real PostgreSQL database): versioned
schema, idempotent writes, guarded transitions, step completion recorded once, and safe use
from threads and other processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from policy_fixtures import evaluation, queued_run, quick_steps

from daemon.act.runs import RunState, StepRecord
from daemon.act.store import StateStore, StoreError
from lifeguard.state.migrate import head


@pytest.fixture
def store(state_url: str) -> Iterator[StateStore]:
    s = StateStore(state_url)
    yield s
    s.close()


def test_schema_is_versioned_wal_and_refuses_a_newer_file(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    StateStore(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    version = conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    assert version == head()
    StateStore(path).close()  # reopening an up-to-date file migrates nothing and works
    conn.execute("UPDATE alembic_version SET version_num = 'f00d'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer than this lifeguard"):
        StateStore(path)


def test_evaluations_round_trip_and_are_stored_once(store: StateStore) -> None:
    ev = evaluation("m", 7, {"drift.distribution[text]": True, "latency.p95_ms": False})
    assert store.add_evaluation(ev) and not store.add_evaluation(ev)
    assert store.get_evaluation(ev.id) == ev
    breached = [a for a in store.list_audit() if a.action == "breach.began"]
    assert len(breached) == 1 and breached[0].evidence["evaluation_id"] == ev.id
    calm = evaluation("m", 8, {"latency.p95_ms": False})
    store.add_evaluation(calm)
    assert [e.id for e in store.list_evaluations("m")] == [calm.id, ev.id]
    store.add_evaluation(evaluation("m", 9, {"latency.p95_ms": False}))
    # A calm evaluation is audit-worthy only when it ends a breach.
    assert [a.action for a in store.list_audit()] == ["breach.began", "breach.ended"]


def test_transitions_are_guarded_and_audited(store: StateStore, tmp_path: Path) -> None:
    run_id = queued_run(store, "m", quick_steps(tmp_path / "log"),
                        state=RunState.PENDING_APPROVAL)
    assert not store.transition(run_id, RunState.RUNNING, "runner", [RunState.QUEUED])
    assert store.transition(run_id, RunState.REJECTED, "bob", [RunState.PENDING_APPROVAL],
                            {"reason": "not now"})
    assert not store.transition(run_id, RunState.QUEUED, "alice", [RunState.PENDING_APPROVAL])
    assert store.get_run(run_id).state is RunState.REJECTED  # type: ignore[union-attr]
    assert [(t.from_state, t.to_state, t.actor) for t in store.transitions(run_id)] == [
        (None, RunState.PENDING_APPROVAL, "test"),
        (RunState.PENDING_APPROVAL, RunState.REJECTED, "bob")]
    audit = store.list_audit(run_id=run_id)
    assert [a.action for a in audit] == ["run.pending_approval", "run.rejected"]
    assert audit[1].evidence["reason"] == "not now"


def test_step_completion_is_recorded_exactly_once_and_in_order(store: StateStore,
                                                              tmp_path: Path) -> None:
    run_id = queued_run(store, "m", quick_steps(tmp_path / "log", n=2))
    record = StepRecord(0, "s0", "ok", {"model": {"path": "/x", "sha256": "ab"}})
    assert not store.complete_step(run_id, record), "not running yet"
    store.transition(run_id, RunState.RUNNING, "runner", [RunState.QUEUED])
    assert not store.complete_step(run_id, StepRecord(1, "s1", "ok")), "step 0 comes first"
    assert store.complete_step(run_id, record)
    assert not store.complete_step(run_id, record), "a replayed completion changes nothing"
    assert store.get_run(run_id).next_step == 1  # type: ignore[union-attr]
    assert store.steps(run_id)[0].artifacts == {"model": {"path": "/x", "sha256": "ab"}}


def test_same_run_id_is_created_once(store: StateStore, tmp_path: Path) -> None:
    queued_run(store, "m", quick_steps(tmp_path / "log"), trigger="a")
    with pytest.raises(AssertionError):
        queued_run(store, "m", quick_steps(tmp_path / "log"), trigger="a")
    assert len(store.list_runs()) == 1 and len(store.list_audit()) == 1


def test_many_threads_write_without_losing_anything(store: StateStore) -> None:
    def write(worker: int) -> None:
        for i in range(50):
            store.audit("test.write", f"t{worker}", evidence={"i": i})
            store.add_evaluation(evaluation(f"m{worker}", i, {"latency.p95_ms": False}))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.list_audit(limit=10_000)) == 200
    assert sum(len(store.list_evaluations(f"m{w}", limit=100)) for w in range(4)) == 200


def test_another_process_writes_beside_this_one(store: StateStore) -> None:
    code = ("import sys; from daemon.act.store import StateStore; s = StateStore(sys.argv[1]);\n"
            "[s.audit('child.write', 'child', evidence={'i': i}) for i in range(100)]")
    child = subprocess.Popen([sys.executable, "-c", code, store.url])
    for i in range(100):
        store.audit("parent.write", "parent", evidence={"i": i})
    assert child.wait(timeout=60) == 0
    entries = store.list_audit(limit=10_000)
    assert sum(e.action == "child.write" for e in entries) == 100
    assert sum(e.action == "parent.write" for e in entries) == 100


def test_pause_is_idempotent_and_audited(store: StateStore) -> None:
    assert store.pause("m", "bob", "labels broken") and not store.pause("m", "bob")
    assert store.paused_models()["m"]["reason"] == "labels broken"
    assert store.resume("m", "alice") and not store.resume("m", "alice")
    assert [a.action for a in store.list_audit()] == ["model.paused", "model.resumed"]


def test_a_file_from_before_alembic_keeps_its_rows_and_gains_the_new_tables(
        tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);"
        "INSERT INTO meta VALUES ('schema_version', '1');"
        "CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL,"
        " actor TEXT NOT NULL, action TEXT NOT NULL, model TEXT, run_id TEXT,"
        " evidence TEXT NOT NULL);"
        "INSERT INTO audit (ts, actor, action, evidence) VALUES (1.0, 'bob', 'old.entry', '{}');")
    conn.close()
    store = StateStore(path)
    store.audit("new.entry", "alice")
    assert [a.action for a in store.list_audit()] == ["old.entry", "new.entry"]
    assert store.pause("m", "bob")  # a table the old file did not have
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '2'")
    conn.execute("DELETE FROM alembic_version")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer than this lifeguard"):
        StateStore(path)
