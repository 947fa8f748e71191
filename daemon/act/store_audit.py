"""What every part of the state store shares: the engine (SQLite or PostgreSQL, migrated on
open), the injectable clock, reads, the cross-instance lock, and the audit log — each state
change writes its audit line through ``_audit`` inside its own transaction, so the log never
disagrees with the state."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy.engine import RowMapping

from daemon.act.runs import AuditEntry
from daemon.act.store_rows import dumps
from lifeguard.state.engine import exclusive, make_engine, read, sqlite_path, state_url, write
from lifeguard.state.migrate import upgrade
from lifeguard.state.tables import audit


class AuditedStore:
    """The store at ``location`` (a SQLite path, or a ``sqlite:///`` or ``postgresql://``
    URL); the record kinds (store_evaluations, store_runs, store) build on it."""

    def __init__(self, location: Path | str, clock: Callable[[], float] = time.time) -> None:
        self.url = state_url(location)
        self.path = sqlite_path(self.url)  # None on PostgreSQL
        self._clock = clock
        self._engine = make_engine(self.url)
        upgrade(self._engine)

    @property
    def shared(self) -> bool:
        """Whether several instances may use this store (PostgreSQL), not one (a file)."""
        return self.path is None

    def close(self) -> None:
        self._engine.dispose()

    def now(self) -> float:
        return self._clock()

    def _rows(self, statement: Any) -> list[RowMapping]:
        with read(self._engine) as conn:
            return list(conn.execute(statement).mappings().all())

    # -- audit -----------------------------------------------------------------------------

    def _audit(self, conn: Connection, action: str, actor: str, model: str | None,
               run_id: str | None, evidence: dict[str, Any]) -> None:
        conn.execute(insert(audit).values(ts=self._clock(), actor=actor, action=action,
                                          model=model, run_id=run_id, evidence=dumps(evidence)))

    def audit(self, action: str, actor: str, model: str | None = None,
              run_id: str | None = None, evidence: dict[str, Any] | None = None) -> None:
        """Record an event that changes no other table (e.g. a trigger suppressed by cooldown)."""
        with write(self._engine) as conn:
            self._audit(conn, action, actor, model, run_id, evidence or {})

    def list_audit(self, since: float | None = None, model: str | None = None,
                   run_id: str | None = None, limit: int = 200) -> list[AuditEntry]:
        """Newest last, the ``limit`` most recent entries matching the filters."""
        query = select(audit)
        if since is not None:
            query = query.where(audit.c.ts >= since)
        if model is not None:
            query = query.where(audit.c.model == model)
        if run_id is not None:
            query = query.where(audit.c.run_id == run_id)
        rows = self._rows(query.order_by(audit.c.id.desc()).limit(limit))
        return [AuditEntry(id=r["id"], ts=r["ts"], actor=r["actor"], action=r["action"],
                           model=r["model"], run_id=r["run_id"], evidence=json.loads(r["evidence"]))
                for r in reversed(rows)]

    @contextmanager
    def exclusive(self, key: str) -> Iterator[None]:
        """Hold ``key`` against every instance sharing this store (PostgreSQL)."""
        with exclusive(self._engine, key):
            yield
