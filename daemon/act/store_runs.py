"""The state store's action runs: created once per trigger, moved between states only from
the states a caller expects, steps recorded exactly once, and the leases whose fence every
write for a leased run carries (``StaleLeaseError`` once another instance holds the run)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from daemon.act.runs import ActionRun, RunState, StepRecord, Transition
from daemon.act.store_audit import AuditedStore
from daemon.act.store_rows import dumps, opt_str, run_from_row
from lifeguard.state import fencing
from lifeguard.state.engine import insert_new, write
from lifeguard.state.fencing import Fence
from lifeguard.state.tables import run_steps, runs, transitions


class RunRecords(AuditedStore):
    """Runs, their steps and transitions, and their leases; every change audited."""

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

    def run_counts(self) -> dict[tuple[str, str], int]:
        """Runs by (model, state), counted by the database: a /metrics scrape reads one row
        per pair, never the runs themselves."""
        n = func.count().label("n")
        rows = self._rows(select(runs.c.model, runs.c.state, n)
                          .group_by(runs.c.model, runs.c.state))
        return {(r["model"], r["state"]): int(r["n"]) for r in rows}

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
