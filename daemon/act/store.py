"""The state store: evaluations, action runs with their steps and transitions, the audit log,
alerts seen and model pauses, in one SQLite file (WAL, versioned schema).

Safe from many threads (one connection per thread) and many processes (WAL + busy timeout +
``BEGIN IMMEDIATE`` for every write). Every state change writes its audit entry in the same
transaction, so the log never disagrees with the state. The SQL is plain enough to move to
PostgreSQL unchanged in spirit (scale-out, docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from daemon.act.breaches import (
    BEGAN,
    DEFAULT_REMINDER_S,
    ENDED,
    ONGOING,
    breach_line,
    current_episode,
)
from daemon.act.runs import ActionRun, AuditEntry, RunState, StepRecord, Transition
from daemon.monitor.evaluation import Evaluation
from detectors.result import DetectorResult, Verdict
from lifeguard.errors import LifeguardError

SCHEMA_VERSION = 1

# Index i holds the statements that take the schema from version i to i + 1.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE evaluations (
        id TEXT PRIMARY KEY, model TEXT NOT NULL, model_version TEXT NOT NULL,
        ts REAL NOT NULL, window_end_offset INTEGER NOT NULL, breached INTEGER NOT NULL,
        results TEXT NOT NULL, stored_at REAL NOT NULL);
    CREATE INDEX evaluations_model_ts ON evaluations (model, ts);
    CREATE TABLE runs (
        id TEXT PRIMARY KEY, model TEXT NOT NULL, pipeline TEXT NOT NULL, source TEXT NOT NULL,
        mode TEXT NOT NULL, state TEXT NOT NULL, next_step INTEGER NOT NULL DEFAULT 0,
        steps TEXT NOT NULL, evidence TEXT NOT NULL, snapshot_path TEXT, champion_path TEXT,
        error TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL);
    CREATE INDEX runs_model_created ON runs (model, created_at);
    CREATE INDEX runs_state ON runs (state);
    CREATE TABLE run_steps (
        run_id TEXT NOT NULL REFERENCES runs (id), idx INTEGER NOT NULL, name TEXT NOT NULL,
        status TEXT NOT NULL, artifacts TEXT NOT NULL, evidence TEXT NOT NULL,
        attempts INTEGER NOT NULL, finished_at REAL NOT NULL, PRIMARY KEY (run_id, idx));
    CREATE TABLE transitions (
        id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL REFERENCES runs (id),
        ts REAL NOT NULL, from_state TEXT, to_state TEXT NOT NULL, step INTEGER,
        actor TEXT NOT NULL, evidence TEXT NOT NULL);
    CREATE INDEX transitions_run ON transitions (run_id, id);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, actor TEXT NOT NULL,
        action TEXT NOT NULL, model TEXT, run_id TEXT, evidence TEXT NOT NULL);
    CREATE INDEX audit_ts ON audit (ts);
    CREATE TABLE alerts (
        fingerprint TEXT NOT NULL, starts_at TEXT NOT NULL, status TEXT NOT NULL,
        model TEXT, group_key TEXT, labels TEXT NOT NULL, received_at REAL NOT NULL,
        PRIMARY KEY (fingerprint, starts_at, status));
    CREATE TABLE model_pauses (
        model TEXT PRIMARY KEY, actor TEXT NOT NULL, reason TEXT NOT NULL, paused_at REAL NOT NULL);
    """,
)


class StoreError(LifeguardError):
    """The state file cannot be used (e.g. written by a newer lifeguard)."""


class StateStore:
    """The daemon's durable state. ``clock`` is injectable so tests can move time."""

    def __init__(self, path: Path | str, clock: Callable[[], float] = time.time,
                 breach_reminder_s: float = DEFAULT_REMINDER_S) -> None:
        self.path = Path(path)
        self._breach_reminder_s = breach_reminder_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._migrate()

    # -- connections and transactions ------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: we issue BEGIN ourselves, so writes take the lock up front.
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across crashes
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _read(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        return self._conn().execute(sql, tuple(args)).fetchall()

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()

    def _migrate(self) -> None:
        with self._write() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row["value"]) if row else 0
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: schema version {version} is newer than this lifeguard "
                    f"({SCHEMA_VERSION}); upgrade lifeguard"
                )
            for statements in _MIGRATIONS[version:]:
                for sql in filter(str.strip, statements.split(";")):
                    conn.execute(sql)
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

    def now(self) -> float:
        return self._clock()

    # -- audit -----------------------------------------------------------------------------

    def _audit(self, conn: sqlite3.Connection, action: str, actor: str, model: str | None,
               run_id: str | None, evidence: dict[str, Any]) -> None:
        conn.execute(
            "INSERT INTO audit (ts, actor, action, model, run_id, evidence) VALUES (?,?,?,?,?,?)",
            (self._clock(), actor, action, model, run_id, _dumps(evidence)),
        )

    def audit(self, action: str, actor: str, model: str | None = None,
              run_id: str | None = None, evidence: dict[str, Any] | None = None) -> None:
        """Record an event that changes no other table (e.g. a trigger suppressed by cooldown)."""
        with self._write() as conn:
            self._audit(conn, action, actor, model, run_id, evidence or {})

    def list_audit(self, since: float | None = None, model: str | None = None,
                   run_id: str | None = None, limit: int = 200) -> list[AuditEntry]:
        """Newest last, the ``limit`` most recent entries matching the filters."""
        where, args = _filters(("ts >=", since), ("model =", model), ("run_id =", run_id))
        rows = self._read(f"SELECT * FROM audit{where} ORDER BY id DESC LIMIT ?", [*args, limit])
        return [AuditEntry(id=r["id"], ts=r["ts"], actor=r["actor"], action=r["action"],
                           model=r["model"], run_id=r["run_id"], evidence=json.loads(r["evidence"]))
                for r in reversed(rows)]

    # -- evaluations -----------------------------------------------------------------------

    def add_evaluation(self, evaluation: Evaluation) -> bool:
        """Store it once; False when this id is already stored (a replayed window)."""
        results = [_result_to_json(r) for r in evaluation.results]
        with self._write() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO evaluations (id, model, model_version, ts, "
                "window_end_offset, breached, results, stored_at) VALUES (?,?,?,?,?,?,?,?)",
                (evaluation.id, evaluation.model, evaluation.model_version, evaluation.ts,
                 evaluation.window_end_offset, int(evaluation.breached), _dumps(results),
                 self._clock()),
            )
            inserted = cur.rowcount == 1
            if inserted:
                self._audit_breach(conn, evaluation)
        return inserted

    def _audit_breach(self, conn: sqlite3.Connection, evaluation: Evaluation) -> None:
        """A line when the version's breach begins or ends, and the odd reminder (breaches.py)."""
        ev = evaluation
        previous = conn.execute(
            "SELECT breached FROM evaluations WHERE model = ? AND model_version = ? AND id != ?"
            " AND (ts < ? OR (ts = ? AND window_end_offset < ?))"
            " ORDER BY ts DESC, window_end_offset DESC LIMIT 1",
            (ev.model, ev.model_version, ev.id, ev.ts, ev.ts, ev.window_end_offset)).fetchone()
        # The model's newest episode lines, a canary's interleaved with the stable version's.
        lines = conn.execute("SELECT ts, action, evidence FROM audit WHERE model = ? AND action"
                             " IN (?, ?, ?) ORDER BY id DESC LIMIT 50",
                             (ev.model, BEGAN, ONGOING, ENDED)).fetchall()
        episode = current_episode([(r["ts"], r["action"], json.loads(r["evidence"]))
                                   for r in lines], ev.model_version)
        action = breach_line(None if previous is None else bool(previous["breached"]),
                             ev.breached, episode, self._clock(), self._breach_reminder_s)
        if action is None:
            return
        evidence: dict[str, Any] = {"evaluation_id": ev.id, "model_version": ev.model_version}
        if action != BEGAN:
            evidence |= {"began_at": episode.began_at,
                         "began_evaluation_id": episode.began_evaluation_id}
        if ev.breached:
            evidence["breaches"] = [_result_to_json(r) for r in ev.breaches]
        self._audit(conn, action, "evaluator", ev.model, None, evidence)

    def get_evaluation(self, evaluation_id: str) -> Evaluation | None:
        rows = self._read("SELECT * FROM evaluations WHERE id = ?", [evaluation_id])
        return _evaluation(rows[0]) if rows else None

    def list_evaluations(self, model: str | None = None, limit: int = 50,
                         model_version: str | None = None) -> list[Evaluation]:
        """Newest first (by window time, then offset)."""
        where, args = _filters(("model =", model), ("model_version =", model_version))
        rows = self._read(
            f"SELECT * FROM evaluations{where} ORDER BY ts DESC, window_end_offset DESC LIMIT ?",
            [*args, limit],
        )
        return [_evaluation(r) for r in rows]

    def models(self) -> list[str]:
        """Every model the store has heard of, from evaluations or runs."""
        rows = self._read("SELECT model FROM evaluations UNION SELECT model FROM runs")
        return sorted(r["model"] for r in rows)

    # -- runs ------------------------------------------------------------------------------

    def create_run(self, run: ActionRun, actor: str) -> bool:
        """Insert a new run and its first transition; False if the id exists (same trigger)."""
        now = self._clock()
        with self._write() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO runs (id, model, pipeline, source, mode, state, next_step,"
                " steps, evidence, snapshot_path, champion_path, error, created_at, updated_at)"
                " VALUES (?,?,?,?,?,?,0,?,?,?,?,NULL,?,?)",
                (run.id, run.model, run.pipeline, run.source, run.mode, run.state.value,
                 _dumps(list(run.steps)), _dumps(run.evidence), _opt_str(run.snapshot_path),
                 _opt_str(run.champion_path), now, now),
            )
            if cur.rowcount != 1:
                return False
            self._transition_row(conn, run.id, None, run.state, None, actor, run.evidence)
            self._audit(conn, f"run.{run.state.value}", actor, run.model, run.id, {
                "pipeline": run.pipeline, "source": run.source, "mode": run.mode, **run.evidence,
            })
        return True

    def _transition_row(self, conn: sqlite3.Connection, run_id: str, from_state: RunState | None,
                        to_state: RunState, step: int | None, actor: str,
                        evidence: dict[str, Any]) -> None:
        conn.execute(
            "INSERT INTO transitions (run_id, ts, from_state, to_state, step, actor, evidence)"
            " VALUES (?,?,?,?,?,?,?)",
            (run_id, self._clock(), from_state.value if from_state else None, to_state.value,
             step, actor, _dumps(evidence)),
        )

    def transition(self, run_id: str, to_state: RunState, actor: str,
                   from_states: Iterable[RunState], evidence: dict[str, Any] | None = None,
                   error: str | None = None) -> bool:
        """Move a run to ``to_state`` only if it is in one of ``from_states``; audit it."""
        allowed = [s.value for s in from_states]
        evidence = dict(evidence or {})
        with self._write() as conn:
            row = conn.execute("SELECT state, model, next_step FROM runs WHERE id = ?",
                               (run_id,)).fetchone()
            if row is None or row["state"] not in allowed:
                return False
            conn.execute("UPDATE runs SET state = ?, error = COALESCE(?, error), updated_at = ?"
                         " WHERE id = ?", (to_state.value, error, self._clock(), run_id))
            from_state = RunState(row["state"])
            self._transition_row(conn, run_id, from_state, to_state, row["next_step"], actor,
                                 {**evidence, **({"error": error} if error else {})})
            self._audit(conn, f"run.{to_state.value}", actor, row["model"], run_id,
                        {"from": from_state.value, "step": row["next_step"], **evidence,
                         **({"error": error} if error else {})})
        return True

    def complete_step(self, run_id: str, record: StepRecord, actor: str = "runner") -> bool:
        """Record a step's outcome and advance the run past it, in one transaction.

        False (and nothing written) when the step is already recorded or the run is no longer
        running: the step's completion is recorded exactly once.
        """
        with self._write() as conn:
            row = conn.execute("SELECT state, model, next_step FROM runs WHERE id = ?",
                               (run_id,)).fetchone()
            if row is None or row["state"] != RunState.RUNNING.value:
                return False
            if row["next_step"] != record.index:
                return False
            conn.execute(
                "INSERT INTO run_steps (run_id, idx, name, status, artifacts, evidence,"
                " attempts, finished_at) VALUES (?,?,?,?,?,?,?,?)",
                (run_id, record.index, record.name, record.status, _dumps(record.artifacts),
                 _dumps(record.evidence), record.attempts, self._clock()),
            )
            conn.execute("UPDATE runs SET next_step = ?, updated_at = ? WHERE id = ?",
                         (record.index + 1, self._clock(), run_id))
            evidence = {"step": record.name, "status": record.status,
                        "artifacts": record.artifacts, "attempts": record.attempts,
                        "evidence": record.evidence}
            self._transition_row(conn, run_id, RunState.RUNNING, RunState.RUNNING,
                                 record.index + 1, actor, evidence)
            self._audit(conn, "run.step_done", actor, row["model"], run_id,
                        {"index": record.index, **evidence})
        return True

    def get_run(self, run_id: str) -> ActionRun | None:
        rows = self._read("SELECT * FROM runs WHERE id = ?", [run_id])
        return _run(rows[0]) if rows else None

    def list_runs(self, model: str | None = None, states: Iterable[RunState] | None = None,
                  limit: int = 100, id_prefix: str | None = None) -> list[ActionRun]:
        """Newest first; ``id_prefix`` keeps the runs whose id starts with it (as git does)."""
        where, args = _filters(("model =", model))
        if id_prefix is not None:  # not LIKE: no wildcards to escape, and case-sensitive
            where = f"{where} AND substr(id, 1, ?) = ?" if where else " WHERE substr(id, 1, ?) = ?"
            args = [*args, len(id_prefix), id_prefix]
        if states is not None:
            values = [s.value for s in states]
            clause = f"state IN ({','.join('?' * len(values))})" if values else "0"
            where = f"{where} AND {clause}" if where else f" WHERE {clause}"
            args = [*args, *values]
        rows = self._read(f"SELECT * FROM runs{where} ORDER BY created_at DESC, id LIMIT ?",
                          [*args, limit])
        return [_run(r) for r in rows]

    def run_counts(self) -> dict[tuple[str, str], int]:
        """Runs by (model, state), counted by the database: a /metrics scrape reads one row
        per pair, never the runs themselves."""
        rows = self._read("SELECT model, state, COUNT(*) AS n FROM runs GROUP BY model, state")
        return {(r["model"], r["state"]): int(r["n"]) for r in rows}

    def runs_created_since(self, model: str, since: float) -> list[ActionRun]:
        rows = self._read("SELECT * FROM runs WHERE model = ? AND created_at >= ?"
                          " ORDER BY created_at DESC", [model, since])
        return [_run(r) for r in rows]

    def steps(self, run_id: str) -> list[StepRecord]:
        rows = self._read("SELECT * FROM run_steps WHERE run_id = ? ORDER BY idx", [run_id])
        return [StepRecord(index=r["idx"], name=r["name"], status=r["status"],
                           artifacts=json.loads(r["artifacts"]), evidence=json.loads(r["evidence"]),
                           attempts=r["attempts"], finished_at=r["finished_at"]) for r in rows]

    def transitions(self, run_id: str) -> list[Transition]:
        rows = self._read("SELECT * FROM transitions WHERE run_id = ? ORDER BY id", [run_id])
        return [Transition(ts=r["ts"], from_state=RunState(r["from_state"]) if r["from_state"]
                           else None, to_state=RunState(r["to_state"]), step=r["step"],
                           actor=r["actor"], evidence=json.loads(r["evidence"])) for r in rows]

    # -- alerts and pauses -----------------------------------------------------------------

    def record_alert(self, fingerprint: str, starts_at: str, status: str, model: str | None,
                     group_key: str | None, labels: dict[str, str]) -> bool:
        """False when this (fingerprint, startsAt, status) was seen before: a resend."""
        with self._write() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO alerts (fingerprint, starts_at, status, model, group_key,"
                " labels, received_at) VALUES (?,?,?,?,?,?,?)",
                (fingerprint, starts_at, status, model, group_key, _dumps(labels), self._clock()),
            )
            inserted = cur.rowcount == 1
            if inserted:
                self._audit(conn, f"alert.{status}", "alertmanager", model, None, {
                    "fingerprint": fingerprint, "startsAt": starts_at, "groupKey": group_key,
                    "labels": labels,
                })
        return inserted

    def forget_alert(self, fingerprint: str, starts_at: str, status: str, error: str) -> None:
        """Undo ``record_alert`` when acting on it failed, so Alertmanager's retry is not a dup."""
        with self._write() as conn:
            conn.execute("DELETE FROM alerts WHERE fingerprint = ? AND starts_at = ? AND "
                         "status = ?", (fingerprint, starts_at, status))
            self._audit(conn, "trigger.failed", "policy", None, None,
                        {"fingerprint": fingerprint, "startsAt": starts_at, "error": error})

    def pause(self, model: str, actor: str, reason: str = "") -> bool:
        with self._write() as conn:
            cur = conn.execute("INSERT OR IGNORE INTO model_pauses (model, actor, reason, "
                               "paused_at) VALUES (?,?,?,?)", (model, actor, reason, self._clock()))
            if cur.rowcount == 1:
                self._audit(conn, "model.paused", actor, model, None, {"reason": reason})
        return cur.rowcount == 1

    def resume(self, model: str, actor: str) -> bool:
        with self._write() as conn:
            cur = conn.execute("DELETE FROM model_pauses WHERE model = ?", (model,))
            if cur.rowcount == 1:
                self._audit(conn, "model.resumed", actor, model, None, {})
        return cur.rowcount == 1

    def paused_models(self) -> dict[str, dict[str, Any]]:
        rows = self._read("SELECT * FROM model_pauses")
        return {r["model"]: {"actor": r["actor"], "reason": r["reason"],
                             "paused_at": r["paused_at"]} for r in rows}


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _opt_str(value: object | None) -> str | None:
    return None if value is None else str(value)


def _filters(*pairs: tuple[str, Any]) -> tuple[str, list[Any]]:
    clauses = [f"{column} ?" for column, value in pairs if value is not None]
    args = [value for _, value in pairs if value is not None]
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


def _result_to_json(r: DetectorResult) -> dict[str, Any]:
    return {"detector": r.detector, "metric": r.metric, "statistic": r.statistic,
            "threshold": r.threshold, "direction": r.direction, "verdict": r.verdict.value,
            "n_reference": r.n_reference, "n_current": r.n_current, "method": r.method,
            "column": r.column, "segment": r.segment, "key": r.key}


def _result_from_json(raw: dict[str, Any]) -> DetectorResult:
    fields = {k: v for k, v in raw.items() if k != "key"}
    return DetectorResult(**{**fields, "verdict": Verdict(fields["verdict"])})


def _evaluation(row: sqlite3.Row) -> Evaluation:
    results = tuple(_result_from_json(r) for r in json.loads(row["results"]))
    return Evaluation(model=row["model"], model_version=row["model_version"], ts=row["ts"],
                      results=results, window_end_offset=row["window_end_offset"], id=row["id"])


def _run(row: sqlite3.Row) -> ActionRun:
    return ActionRun(
        id=row["id"], model=row["model"], pipeline=row["pipeline"], source=row["source"],
        mode=row["mode"], state=RunState(row["state"]), next_step=row["next_step"],
        steps=tuple(json.loads(row["steps"])), evidence=json.loads(row["evidence"]),
        snapshot_path=row["snapshot_path"], champion_path=row["champion_path"],
        error=row["error"], created_at=row["created_at"], updated_at=row["updated_at"],
    )
