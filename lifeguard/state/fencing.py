"""Run leases with fencing tokens, shared by the runner (daemon) and the deploy step (deploy).

A lease row says which instance may change a run and until when; its token grows by one with
every new holder. Every fenced write checks, in its own transaction, that the token it was
given is still the run's: a holder that lost the lease (it stalled, its model moved) is refused
with :class:`StaleLeaseError` and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, insert, select, update

from lifeguard.state.engine import StoreError
from lifeguard.state.tables import run_leases, runs


class StaleLeaseError(StoreError):
    """A write carried a fencing token that is no longer the run's: another instance owns it."""


@dataclass(frozen=True, slots=True)
class Fence:
    """What a lease holder presents with every write of its run."""

    run_id: str
    owner: str
    token: int

    def __str__(self) -> str:
        return f"{self.run_id}@{self.token}"


def acquire(conn: Connection, run_id: str, owner: str, ttl_s: float, now: float,
            force: bool = False) -> tuple[Fence, bool] | None:
    """Take or renew ``run_id``'s lease for ``owner``: the fence and whether its token is new;
    None while another holder's lease lives, unless ``force`` (the holder is known dead).

    The run's row is locked first (``FOR UPDATE``; SQLite already holds its write lock), so two
    instances racing for a lapsed lease get one token each, never the same one.
    """
    conn.execute(select(runs.c.id).where(runs.c.id == run_id).with_for_update())
    row = conn.execute(select(run_leases).where(run_leases.c.run_id == run_id)).mappings().first()
    if row is None:
        conn.execute(insert(run_leases).values(run_id=run_id, owner=owner, token=1,
                                               expires_at=now + ttl_s, acquired_at=now))
        return Fence(run_id, owner, 1), True
    if row["owner"] == owner and row["expires_at"] > now and not force:
        conn.execute(update(run_leases).where(run_leases.c.run_id == run_id)
                     .values(expires_at=now + ttl_s))
        return Fence(run_id, owner, int(row["token"])), False
    if row["expires_at"] > now and not force:
        return None
    token = int(row["token"]) + 1  # a new holder (or this one after its lease lapsed)
    conn.execute(update(run_leases).where(run_leases.c.run_id == run_id)
                 .values(owner=owner, token=token, expires_at=now + ttl_s, acquired_at=now))
    return Fence(run_id, owner, token), True


def check(conn: Connection, fence: Fence) -> None:
    """Raise StaleLeaseError unless ``fence`` is still the run's lease (row locked until the
    caller's transaction ends, so no takeover can slip in before its write commits)."""
    row = conn.execute(select(run_leases.c.owner, run_leases.c.token)
                       .where(run_leases.c.run_id == fence.run_id)
                       .with_for_update()).first()
    if row is None or row.token != fence.token or row.owner != fence.owner:
        holder = "nobody" if row is None else f"{row.owner} (token {row.token})"
        raise StaleLeaseError(f"run {fence.run_id}: fencing token {fence.token} of "
                              f"{fence.owner} is stale; the run is leased by {holder}")


def renew(conn: Connection, fence: Fence, ttl_s: float, now: float) -> None:
    """Extend a live lease; StaleLeaseError when it was taken over."""
    check(conn, fence)
    conn.execute(update(run_leases).where(run_leases.c.run_id == fence.run_id)
                 .values(expires_at=now + ttl_s))


def release(conn: Connection, fence: Fence, now: float) -> bool:
    """Let the lease lapse now, so the next owner need not wait out its ttl; False when it
    was no longer ours."""
    result = conn.execute(update(run_leases).where(
        run_leases.c.run_id == fence.run_id, run_leases.c.token == fence.token,
        run_leases.c.owner == fence.owner).values(expires_at=now))
    return result.rowcount == 1
