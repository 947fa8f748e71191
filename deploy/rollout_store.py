"""Durable rollout state: desired and observed versions per replica, the phase, and an event
log, in the daemon's state store (tables ``rollouts`` and ``rollout_events``, SQLite or
PostgreSQL, migrated by the same history as the rest: ``lifeguard.state``).

Given the run's fence, every write first checks it in the same transaction: the rollout writes
the desired versions before each fleet action, so an instance that lost the run is stopped
(``StaleLeaseError``) before it touches the fleet.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.engine import RowMapping

from lifeguard.state import fencing
from lifeguard.state.engine import make_engine, read, sqlite_path, state_url, write
from lifeguard.state.fencing import Fence
from lifeguard.state.migrate import upgrade
from lifeguard.state.tables import rollout_events, rollouts

Phase = Literal["rolling", "canary", "promoting", "rolling_back", "done", "rolled_back"]
TERMINAL_PHASES: frozenset[str] = frozenset({"done", "rolled_back"})
Versions = dict[str, int | None]  # replica URL -> model version (None: serves nothing)

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
    """One short connection per call: safe from threads and from a process restarted mid-write.

    ``location`` is a SQLite path or a state URL; ``fence`` (the deploying run's lease) makes
    every write conditional on the run still being this caller's.
    """

    def __init__(self, location: Path | str, fence: Fence | None = None) -> None:
        self.url = state_url(location)
        self.path = sqlite_path(self.url)
        self.fence = fence
        self._engine = make_engine(self.url, pooled=False)
        upgrade(self._engine)

    def create(self, model: str, from_version: int | None, to_version: int, strategy: str,
               phase: str, desired: Versions, observed: Versions) -> RolloutRecord:
        now = time.time()
        record = RolloutRecord(
            id=f"{model}-v{to_version}-{uuid.uuid4().hex[:8]}", model=model,
            from_version=from_version, to_version=to_version, strategy=strategy, phase=phase,
            desired=dict(desired), observed=dict(observed), reason=None, canary_since=None,
            created_at=now, updated_at=now)
        with self._write() as db:
            db.execute(insert(rollouts).values(
                id=record.id, model=model, from_version=from_version, to_version=to_version,
                strategy=strategy, phase=phase, desired=json.dumps(record.desired),
                observed=json.dumps(record.observed), reason=None, canary_since=None,
                created_at=now, updated_at=now))
            _insert_event(db, record.id, "created",
                          {"from_version": from_version, "to_version": to_version,
                           "strategy": strategy, "desired": record.desired})
        return record

    def get(self, rollout_id: str) -> RolloutRecord:
        row = self._first(select(rollouts).where(rollouts.c.id == rollout_id))
        if row is None:
            raise KeyError(rollout_id)
        return _record(row)

    def active(self, model: str) -> RolloutRecord | None:
        """The model's unfinished rollout, if a controller died in the middle of one."""
        row = self._first(select(rollouts).where(
            rollouts.c.model == model, rollouts.c.phase.not_in(sorted(TERMINAL_PHASES)))
            .order_by(rollouts.c.created_at.desc()).limit(1))
        return None if row is None else _record(row)

    def latest(self, model: str, to_version: int | None = None) -> RolloutRecord | None:
        query = select(rollouts).where(rollouts.c.model == model)
        if to_version is not None:
            query = query.where(rollouts.c.to_version == to_version)
        row = self._first(query.order_by(rollouts.c.created_at.desc()).limit(1))
        return None if row is None else _record(row)

    def update(self, record: RolloutRecord, **changes: Any) -> RolloutRecord:
        """Write the changed fields; a phase change is also logged as an event."""
        new = replace(record, **changes, updated_at=time.time())
        with self._write() as db:
            db.execute(update(rollouts).where(rollouts.c.id == new.id).values(
                phase=new.phase, desired=json.dumps(new.desired),
                observed=json.dumps(new.observed), reason=new.reason,
                canary_since=new.canary_since, updated_at=new.updated_at))
            if new.phase != record.phase:
                _insert_event(db, new.id, "phase",
                              {"from": record.phase, "to": new.phase, "reason": new.reason})
        return new

    def add_event(self, rollout_id: str, kind: str, detail: dict[str, Any]) -> None:
        with self._write() as db:
            _insert_event(db, rollout_id, kind, detail)

    def events(self, rollout_id: str) -> list[RolloutEvent]:
        with read(self._engine) as db:
            rows = db.execute(select(rollout_events).where(
                rollout_events.c.rollout_id == rollout_id).order_by(rollout_events.c.seq)).all()
        return [RolloutEvent(r.seq, r.rollout_id, r.ts, r.kind, json.loads(r.detail))
                for r in rows]

    def check_fence(self) -> None:
        """Raise StaleLeaseError when the run this store writes for is no longer ours."""
        if self.fence is not None:
            with write(self._engine) as db:
                fencing.check(db, self.fence)

    def _first(self, statement: Any) -> RowMapping | None:
        with read(self._engine) as db:
            return db.execute(statement).mappings().first()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with write(self._engine) as db:  # commits on success, rolls back on error
            if self.fence is not None:
                fencing.check(db, self.fence)
            yield db


def _insert_event(db: Connection, rollout_id: str, kind: str, detail: dict[str, Any]) -> None:
    db.execute(insert(rollout_events).values(rollout_id=rollout_id, ts=time.time(), kind=kind,
                                             detail=json.dumps(detail, default=str)))


def _versions(text: str) -> Versions:
    return {url: (None if v is None else int(v)) for url, v in json.loads(text).items()}


def _record(row: RowMapping) -> RolloutRecord:
    return RolloutRecord(
        id=row["id"], model=row["model"], from_version=row["from_version"],
        to_version=row["to_version"], strategy=row["strategy"], phase=row["phase"],
        desired=_versions(row["desired"]), observed=_versions(row["observed"]),
        reason=row["reason"], canary_since=row["canary_since"], created_at=row["created_at"],
        updated_at=row["updated_at"])
