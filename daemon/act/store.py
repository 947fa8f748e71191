"""The state store: evaluations, action runs with their steps, transitions and leases, the
audit log, alerts seen and model pauses, in a SQLite file or one shared PostgreSQL database.

Both backends run the same SQLAlchemy Core statements and the same Alembic history
(``lifeguard.state``). Safe from many threads (a connection pool) and many processes (SQLite's
write lock, PostgreSQL row locks). Every state change writes its audit entry in the same
transaction, so the log never disagrees with the state; a change made for a leased run carries
the lease's fence and is refused (``StaleLeaseError``) once another instance holds the run.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, union

from daemon.act.store_evaluations import EvaluationRecords
from daemon.act.store_rows import dumps
from daemon.act.store_runs import RunRecords
from lifeguard.state.engine import StoreError, insert_new, write
from lifeguard.state.fencing import Fence, StaleLeaseError
from lifeguard.state.tables import alerts, evaluations, model_pauses, runs

__all__ = ["Fence", "StaleLeaseError", "StateStore", "StoreError"]


class StateStore(EvaluationRecords, RunRecords):
    """The daemon's durable state at ``location`` (a SQLite path, or a ``sqlite:///`` or
    ``postgresql://`` URL). ``clock`` is injectable so tests can move time. Evaluations are
    store_evaluations', runs and leases store_runs', the audit log store_audit's; alerts seen,
    model pauses and the models heard of are here."""

    def models(self) -> list[str]:
        """Every model the store has heard of, from evaluations or runs."""
        rows = self._rows(union(select(evaluations.c.model), select(runs.c.model)))
        return sorted(r["model"] for r in rows)

    # -- alerts and pauses -----------------------------------------------------------------

    def record_alert(self, fingerprint: str, starts_at: str, status: str, model: str | None,
                     group_key: str | None, labels: dict[str, str]) -> bool:
        """False when this (fingerprint, startsAt, status) was seen before: a resend."""
        with write(self._engine) as conn:
            inserted = insert_new(
                conn, alerts, fingerprint=fingerprint, starts_at=starts_at, status=status,
                model=model, group_key=group_key, labels=dumps(labels),
                received_at=self._clock())
            if inserted:
                self._audit(conn, f"alert.{status}", "alertmanager", model, None, {
                    "fingerprint": fingerprint, "startsAt": starts_at, "groupKey": group_key,
                    "labels": labels,
                })
        return inserted

    def forget_alert(self, fingerprint: str, starts_at: str, status: str, error: str) -> None:
        """Undo ``record_alert`` when acting on it failed, so Alertmanager's retry is not a dup."""
        with write(self._engine) as conn:
            conn.execute(delete(alerts).where(alerts.c.fingerprint == fingerprint,
                                              alerts.c.starts_at == starts_at,
                                              alerts.c.status == status))
            self._audit(conn, "trigger.failed", "policy", None, None,
                        {"fingerprint": fingerprint, "startsAt": starts_at, "error": error})

    def pause(self, model: str, actor: str, reason: str = "") -> bool:
        with write(self._engine) as conn:
            paused = insert_new(conn, model_pauses, model=model, actor=actor, reason=reason,
                                paused_at=self._clock())
            if paused:
                self._audit(conn, "model.paused", actor, model, None, {"reason": reason})
        return paused

    def resume(self, model: str, actor: str) -> bool:
        with write(self._engine) as conn:
            cur = conn.execute(delete(model_pauses).where(model_pauses.c.model == model))
            if cur.rowcount == 1:
                self._audit(conn, "model.resumed", actor, model, None, {})
        return cur.rowcount == 1

    def paused_models(self) -> dict[str, dict[str, Any]]:
        rows = self._rows(select(model_pauses))
        return {r["model"]: {"actor": r["actor"], "reason": r["reason"],
                             "paused_at": r["paused_at"]} for r in rows}
