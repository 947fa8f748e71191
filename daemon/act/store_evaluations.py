"""The state store's evaluations: each stored once by id, with the audit line when a version's
breach begins, goes on or ends (daemon.act.breaches), and read back newest first."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from daemon.act.breaches import (
    BEGAN,
    DEFAULT_REMINDER_S,
    ENDED,
    ONGOING,
    breach_line,
    current_episode,
)
from daemon.act.store_audit import AuditedStore
from daemon.act.store_rows import dumps, evaluation_from_row, result_to_json
from daemon.monitor.evaluation import Evaluation
from lifeguard.state.engine import insert_new, write
from lifeguard.state.tables import audit, evaluations


class EvaluationRecords(AuditedStore):
    """Evaluations and their breach audit; ``breach_reminder_s`` spaces the reminders."""

    def __init__(self, location: Path | str, clock: Callable[[], float] = time.time,
                 breach_reminder_s: float = DEFAULT_REMINDER_S) -> None:
        super().__init__(location, clock)
        self._breach_reminder_s = breach_reminder_s

    def add_evaluation(self, evaluation: Evaluation) -> bool:
        """Store it once; False when this id is already stored (a replayed window)."""
        results = [result_to_json(r) for r in evaluation.results]
        with write(self._engine) as conn:
            inserted = insert_new(
                conn, evaluations, id=evaluation.id, model=evaluation.model,
                model_version=evaluation.model_version, ts=evaluation.ts,
                window_end_offset=evaluation.window_end_offset,
                breached=int(evaluation.breached), results=dumps(results),
                stored_at=self._clock())
            if inserted:
                self._audit_breach(conn, evaluation)
        return inserted

    def _audit_breach(self, conn: Connection, evaluation: Evaluation) -> None:
        """A line when the version's breach begins or ends, and the odd reminder (breaches.py)."""
        ev, e = evaluation, evaluations.c
        previous = conn.execute(
            select(e.breached).where(
                e.model == ev.model, e.model_version == ev.model_version, e.id != ev.id,
                (e.ts < ev.ts) | ((e.ts == ev.ts) & (e.window_end_offset < ev.window_end_offset)))
            .order_by(e.ts.desc(), e.window_end_offset.desc()).limit(1)).first()
        # The model's newest episode lines, a canary's interleaved with the stable version's.
        lines = conn.execute(
            select(audit.c.ts, audit.c.action, audit.c.evidence)
            .where(audit.c.model == ev.model, audit.c.action.in_([BEGAN, ONGOING, ENDED]))
            .order_by(audit.c.id.desc()).limit(50)).all()
        episode = current_episode([(r.ts, r.action, json.loads(r.evidence)) for r in lines],
                                  ev.model_version)
        action = breach_line(None if previous is None else bool(previous.breached),
                             ev.breached, episode, self._clock(), self._breach_reminder_s)
        if action is None:
            return
        evidence: dict[str, Any] = {"evaluation_id": ev.id, "model_version": ev.model_version}
        if action != BEGAN:
            evidence |= {"began_at": episode.began_at,
                         "began_evaluation_id": episode.began_evaluation_id}
        if ev.breached:
            evidence["breaches"] = [result_to_json(r) for r in ev.breaches]
        self._audit(conn, action, "evaluator", ev.model, None, evidence)

    def get_evaluation(self, evaluation_id: str) -> Evaluation | None:
        rows = self._rows(select(evaluations).where(evaluations.c.id == evaluation_id))
        return evaluation_from_row(rows[0]) if rows else None

    def list_evaluations(self, model: str | None = None, limit: int = 50,
                         model_version: str | None = None) -> list[Evaluation]:
        """Newest first (by window time, then offset)."""
        query = select(evaluations)
        if model is not None:
            query = query.where(evaluations.c.model == model)
        if model_version is not None:
            query = query.where(evaluations.c.model_version == model_version)
        rows = self._rows(query.order_by(evaluations.c.ts.desc(),
                                         evaluations.c.window_end_offset.desc()).limit(limit))
        return [evaluation_from_row(r) for r in rows]
