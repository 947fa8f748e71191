"""The state store: evaluations, action runs with their steps, transitions and leases, the
audit log, alerts seen and model pauses, in a SQLite file or one shared PostgreSQL database.

Both backends run the same SQLAlchemy Core statements and the same Alembic history
(``lifeguard.state``). Safe from many threads (a connection pool) and many processes (SQLite's
write lock, PostgreSQL row locks). Every state change writes its audit entry in the same
transaction, so the log never disagrees with the state; a change made for a leased run carries
the lease's fence and is refused (``StaleLeaseError``) once another instance holds the run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, union, update
from sqlalchemy.engine import RowMapping

from daemon.act.breaches import (
    BEGAN,
    DEFAULT_REMINDER_S,
    ENDED,
    ONGOING,
    breach_line,
    current_episode,
)
from daemon.act.runs import ActionRun, AuditEntry, RunState, StepRecord, Transition
from daemon.act.store_rows import (
    dumps,
    evaluation_from_row,
    opt_str,
    result_to_json,
    run_from_row,
)
from daemon.monitor.evaluation import Evaluation
from lifeguard.state import fencing
from lifeguard.state.engine import (
    StoreError,
    exclusive,
    insert_new,
    make_engine,
    read,
    sqlite_path,
    state_url,
    write,
)
from lifeguard.state.fencing import Fence, StaleLeaseError
from lifeguard.state.migrate import upgrade
from lifeguard.state.tables import (
    alerts,
    audit,
    evaluations,
    model_pauses,
    run_steps,
    runs,
    transitions,
)

__all__ = ["Fence", "StaleLeaseError", "StateStore", "StoreError"]


class StateStore:
    """The daemon's durable state at ``location`` (a SQLite path, or a ``sqlite:///`` or
    ``postgresql://`` URL). ``clock`` is injectable so tests can move time."""

    def __init__(self, location: Path | str, clock: Callable[[], float] = time.time,
                 breach_reminder_s: float = DEFAULT_REMINDER_S) -> None:
        self.url = state_url(location)
        self._breach_reminder_s = breach_reminder_s
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

    # -- evaluations -----------------------------------------------------------------------

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

    def models(self) -> list[str]:
        """Every model the store has heard of, from evaluations or runs."""
        rows = self._rows(union(select(evaluations.c.model), select(runs.c.model)))
        return sorted(r["model"] for r in rows)

    # -- runs ------------------------------------------------------------------------------

    def create_run(self, run: ActionRun, actor: str) -> bool:
        """Insert a new run and its first transition; False if the id exists (same trigger)."""
        now = self._clock()
        with write(self._engine) as conn:
            if not insert_new(
                conn, runs, id=run.id, model=run.model, pipeline=run.pipeline, source=run.source,
                mode=run.mode, state=run.state.value, next_step=0, steps=dumps(list(run.steps)),
                evidence=dumps(run.evidence), snapshot_path=opt_str(run.snapshot_path),
                champion_path=opt_str(run.champion_path), error=None, created_at=now,
                updated_at=now):
                return False
            self._transition_row(conn, run.id, None, run.state, None, actor, run.evidence)
            self._audit(conn, f"run.{run.state.value}", actor, run.model, run.id, {
                "pipeline": run.pipeline, "source": run.source, "mode": run.mode, **run.evidence,
            })
        return True

    def _transition_row(self, conn: Connection, run_id: str, from_state: RunState | None,
                        to_state: RunState, step: int | None, actor: str,
                        evidence: dict[str, Any]) -> None:
        conn.execute(insert(transitions).values(
            run_id=run_id, ts=self._clock(), from_state=from_state.value if from_state else None,
            to_state=to_state.value, step=step, actor=actor, evidence=dumps(evidence)))

    @staticmethod
    def _locked_run(conn: Connection, run_id: str, fence: Fence | None) -> Any:
        """The run's row, locked for this transaction, after checking the fence if any."""
        if fence is not None:
            fencing.check(conn, fence)
        return conn.execute(select(runs.c.state, runs.c.model, runs.c.next_step)
                            .where(runs.c.id == run_id).with_for_update()).first()

    def transition(self, run_id: str, to_state: RunState, actor: str,
                   from_states: Iterable[RunState], evidence: dict[str, Any] | None = None,
                   error: str | None = None, fence: Fence | None = None) -> bool:
        """Move a run to ``to_state`` only if it is in one of ``from_states``; audit it."""
        allowed = [s.value for s in from_states]
        evidence = dict(evidence or {})
        with write(self._engine) as conn:
            row = self._locked_run(conn, run_id, fence)
            if row is None or row.state not in allowed:
                return False
            conn.execute(update(runs).where(runs.c.id == run_id).values(
                state=to_state.value, error=func.coalesce(error, runs.c.error),
                updated_at=self._clock()))
            from_state = RunState(row.state)
            self._transition_row(conn, run_id, from_state, to_state, row.next_step, actor,
                                 {**evidence, **({"error": error} if error else {})})
            self._audit(conn, f"run.{to_state.value}", actor, row.model, run_id,
                        {"from": from_state.value, "step": row.next_step, **evidence,
                         **({"error": error} if error else {})})
        return True

    def complete_step(self, run_id: str, record: StepRecord, actor: str = "runner",
                      fence: Fence | None = None) -> bool:
        """Record a step's outcome and advance the run past it, in one transaction.

        False (and nothing written) when the step is already recorded or the run is no longer
        running: the step's completion is recorded exactly once.
        """
        with write(self._engine) as conn:
            row = self._locked_run(conn, run_id, fence)
            if row is None or row.state != RunState.RUNNING.value:
                return False
            if row.next_step != record.index:
                return False
            conn.execute(insert(run_steps).values(
                run_id=run_id, idx=record.index, name=record.name, status=record.status,
                artifacts=dumps(record.artifacts), evidence=dumps(record.evidence),
                attempts=record.attempts, finished_at=self._clock()))
            conn.execute(update(runs).where(runs.c.id == run_id).values(
                next_step=record.index + 1, updated_at=self._clock()))
            evidence = {"step": record.name, "status": record.status,
                        "artifacts": record.artifacts, "attempts": record.attempts,
                        "evidence": record.evidence}
            self._transition_row(conn, run_id, RunState.RUNNING, RunState.RUNNING,
                                 record.index + 1, actor, evidence)
            self._audit(conn, "run.step_done", actor, row.model, run_id,
                        {"index": record.index, **evidence})
        return True

    def fill_paths(self, run_id: str, snapshot: Path | None, champion: Path | None,
                   actor: str, fence: Fence | None = None) -> bool:
        """Give a run created without a snapshot (its trigger landed on an instance that does
        not own the model) the owner's snapshot and champion; False if it already has one."""
        with write(self._engine) as conn:
            row = self._locked_run(conn, run_id, fence)
            current = conn.execute(select(runs.c.snapshot_path).where(runs.c.id == run_id))
            if row is None or current.scalar() is not None:
                return False
            conn.execute(update(runs).where(runs.c.id == run_id).values(
                snapshot_path=opt_str(snapshot),
                champion_path=func.coalesce(opt_str(champion), runs.c.champion_path),
                updated_at=self._clock()))
            self._audit(conn, "run.snapshot_taken", actor, row.model, run_id,
                        {"snapshot_path": opt_str(snapshot),
                         "champion_path": opt_str(champion)})
        return True

    def get_run(self, run_id: str) -> ActionRun | None:
        rows = self._rows(select(runs).where(runs.c.id == run_id))
        return run_from_row(rows[0]) if rows else None

    def list_runs(self, model: str | None = None, states: Iterable[RunState] | None = None,
                  limit: int = 100, id_prefix: str | None = None) -> list[ActionRun]:
        """Newest first; ``id_prefix`` keeps the runs whose id starts with it (as git does)."""
        query = select(runs)
        if model is not None:
            query = query.where(runs.c.model == model)
        if id_prefix is not None:  # not LIKE: no wildcards to escape, and case-sensitive
            query = query.where(func.substr(runs.c.id, 1, len(id_prefix)) == id_prefix)
        if states is not None:
            query = query.where(runs.c.state.in_([s.value for s in states]))
        rows = self._rows(query.order_by(runs.c.created_at.desc(), runs.c.id).limit(limit))
        return [run_from_row(r) for r in rows]

    def runs_created_since(self, model: str, since: float) -> list[ActionRun]:
        rows = self._rows(select(runs).where(runs.c.model == model, runs.c.created_at >= since)
                          .order_by(runs.c.created_at.desc()))
        return [run_from_row(r) for r in rows]

    def steps(self, run_id: str) -> list[StepRecord]:
        rows = self._rows(select(run_steps).where(run_steps.c.run_id == run_id)
                          .order_by(run_steps.c.idx))
        return [StepRecord(index=r["idx"], name=r["name"], status=r["status"],
                           artifacts=json.loads(r["artifacts"]), evidence=json.loads(r["evidence"]),
                           attempts=r["attempts"], finished_at=r["finished_at"]) for r in rows]

    def transitions(self, run_id: str) -> list[Transition]:
        rows = self._rows(select(transitions).where(transitions.c.run_id == run_id)
                          .order_by(transitions.c.id))
        return [Transition(ts=r["ts"], from_state=RunState(r["from_state"]) if r["from_state"]
                           else None, to_state=RunState(r["to_state"]), step=r["step"],
                           actor=r["actor"], evidence=json.loads(r["evidence"])) for r in rows]

    @contextmanager
    def exclusive(self, key: str) -> Iterator[None]:
        """Hold ``key`` against every instance sharing this store (PostgreSQL)."""
        with exclusive(self._engine, key):
            yield

    # -- leases ----------------------------------------------------------------------------

    def acquire_lease(self, run_id: str, owner: str, ttl_s: float,
                      force: bool = False) -> Fence | None:
        """Take (or renew) the run's lease; None while another instance's lease is live,
        unless ``force``: its holder is known to be dead (this store is one instance's)."""
        with write(self._engine) as conn:
            taken = fencing.acquire(conn, run_id, owner, ttl_s, self._clock(), force)
            if taken is None:
                return None
            fence, fresh = taken
            if fresh:
                model = conn.execute(select(runs.c.model).where(runs.c.id == run_id)).scalar()
                self._audit(conn, "run.leased", owner, model, run_id, {"token": fence.token})
        return fence

    def renew_lease(self, fence: Fence, ttl_s: float) -> None:
        """Extend a held lease; StaleLeaseError when another instance took the run over."""
        with write(self._engine) as conn:
            fencing.renew(conn, fence, ttl_s, self._clock())

    def release_lease(self, fence: Fence) -> bool:
        """Let the lease lapse now (this instance stops acting on the run)."""
        with write(self._engine) as conn:
            return fencing.release(conn, fence, self._clock())

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
