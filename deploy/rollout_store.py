"""Durable rollout state: desired and observed versions per replica, the phase, and an event
log, in the daemon's SQLite file (tables ``rollouts`` and ``rollout_events``)."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

Phase = Literal["rolling", "canary", "promoting", "rolling_back", "done", "rolled_back"]
TERMINAL_PHASES: frozenset[str] = frozenset({"done", "rolled_back"})
Versions = dict[str, int | None]  # replica URL -> model version (None: serves nothing)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    from_version INTEGER,
    to_version INTEGER NOT NULL,
    strategy TEXT NOT NULL,
    phase TEXT NOT NULL,
    desired TEXT NOT NULL,
    observed TEXT NOT NULL,
    reason TEXT,
    canary_since REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS rollouts_model ON rollouts (model, created_at);
CREATE TABLE IF NOT EXISTS rollout_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id TEXT NOT NULL REFERENCES rollouts (id),
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rollout_events_rollout ON rollout_events (rollout_id, seq);
"""


@dataclass(frozen=True)
class RolloutRecord:
    id: str
    model: str
    from_version: int | None
    to_version: int
    strategy: str
    phase: str
    desired: Versions
    observed: Versions
    reason: str | None
    canary_since: float | None
    created_at: float
    updated_at: float

    @property
    def finished(self) -> bool:
        return self.phase in TERMINAL_PHASES

    @property
    def settled_version(self) -> int | None:
        """What the fleet serves once this rollout has settled: the new version when it is
        done, the old one otherwise (rolled back, or still in progress)."""
        return self.to_version if self.phase == "done" else self.from_version


@dataclass(frozen=True)
class RolloutEvent:
    seq: int
    rollout_id: str
    ts: float
    kind: str
    detail: dict[str, Any]


class RolloutStore:
    """One short connection per call: safe from threads and from a process restarted mid-write."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    def create(self, model: str, from_version: int | None, to_version: int, strategy: str,
               phase: str, desired: Versions, observed: Versions) -> RolloutRecord:
        now = time.time()
        record = RolloutRecord(
            id=f"{model}-v{to_version}-{uuid.uuid4().hex[:8]}", model=model,
            from_version=from_version, to_version=to_version, strategy=strategy, phase=phase,
            desired=dict(desired), observed=dict(observed), reason=None, canary_since=None,
            created_at=now, updated_at=now)
        with self._connect() as db:
            db.execute(
                "INSERT INTO rollouts VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (record.id, model, from_version, to_version, strategy, phase,
                 json.dumps(record.desired), json.dumps(record.observed), None, None, now, now))
            _insert_event(db, record.id, "created",
                          {"from_version": from_version, "to_version": to_version,
                           "strategy": strategy, "desired": record.desired})
        return record

    def get(self, rollout_id: str) -> RolloutRecord:
        with self._connect() as db:
            row = db.execute("SELECT * FROM rollouts WHERE id = ?", (rollout_id,)).fetchone()
        if row is None:
            raise KeyError(rollout_id)
        return _record(row)

    def active(self, model: str) -> RolloutRecord | None:
        """The model's unfinished rollout, if a controller died in the middle of one."""
        marks = ",".join("?" * len(TERMINAL_PHASES))
        with self._connect() as db:
            row = db.execute(
                f"SELECT * FROM rollouts WHERE model = ? AND phase NOT IN ({marks}) "
                "ORDER BY created_at DESC LIMIT 1", (model, *sorted(TERMINAL_PHASES))).fetchone()
        return None if row is None else _record(row)

    def latest(self, model: str, to_version: int | None = None) -> RolloutRecord | None:
        query = "SELECT * FROM rollouts WHERE model = ?"
        args: list[object] = [model]
        if to_version is not None:
            query += " AND to_version = ?"
            args.append(to_version)
        with self._connect() as db:
            row = db.execute(query + " ORDER BY created_at DESC LIMIT 1", args).fetchone()
        return None if row is None else _record(row)

    def update(self, record: RolloutRecord, **changes: Any) -> RolloutRecord:
        """Write the changed fields; a phase change is also logged as an event."""
        new = replace(record, **changes, updated_at=time.time())
        with self._connect() as db:
            db.execute(
                "UPDATE rollouts SET phase=?, desired=?, observed=?, reason=?, canary_since=?, "
                "updated_at=? WHERE id=?",
                (new.phase, json.dumps(new.desired), json.dumps(new.observed), new.reason,
                 new.canary_since, new.updated_at, new.id))
            if new.phase != record.phase:
                _insert_event(db, new.id, "phase",
                              {"from": record.phase, "to": new.phase, "reason": new.reason})
        return new

    def add_event(self, rollout_id: str, kind: str, detail: dict[str, Any]) -> None:
        with self._connect() as db:
            _insert_event(db, rollout_id, kind, detail)

    def events(self, rollout_id: str) -> list[RolloutEvent]:
        with self._connect() as db:
            rows = db.execute("SELECT seq, rollout_id, ts, kind, detail FROM rollout_events "
                              "WHERE rollout_id = ? ORDER BY seq", (rollout_id,)).fetchall()
        return [RolloutEvent(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10.0)
        db.row_factory = sqlite3.Row
        try:
            with db:  # commits on success, rolls back on error
                yield db
        finally:
            db.close()


def _insert_event(db: sqlite3.Connection, rollout_id: str, kind: str,
                  detail: dict[str, Any]) -> None:
    db.execute("INSERT INTO rollout_events (rollout_id, ts, kind, detail) VALUES (?,?,?,?)",
               (rollout_id, time.time(), kind, json.dumps(detail, default=str)))


def _versions(text: str) -> Versions:
    return {url: (None if v is None else int(v)) for url, v in json.loads(text).items()}


def _record(row: sqlite3.Row) -> RolloutRecord:
    return RolloutRecord(
        id=row["id"], model=row["model"], from_version=row["from_version"],
        to_version=row["to_version"], strategy=row["strategy"], phase=row["phase"],
        desired=_versions(row["desired"]), observed=_versions(row["observed"]),
        reason=row["reason"], canary_since=row["canary_since"], created_at=row["created_at"],
        updated_at=row["updated_at"])
