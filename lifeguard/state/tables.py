"""Every table of the state store, daemon's and deploy's alike, as SQLAlchemy Core metadata.

The migrations (``lifeguard.state.migrations``) create exactly these; the stores query them.
Types are portable: epoch seconds are double precision, JSON documents are text.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
)

metadata = MetaData()

# SQLite only aliases rowid (and so autoincrements) for exactly INTEGER PRIMARY KEY.
SERIAL = BigInteger().with_variant(Integer(), "sqlite")

evaluations = Table(
    "evaluations", metadata,
    Column("id", Text, primary_key=True),
    Column("model", Text, nullable=False),
    Column("model_version", Text, nullable=False),
    Column("ts", Float, nullable=False),
    Column("window_end_offset", BigInteger, nullable=False),
    Column("breached", Integer, nullable=False),
    Column("results", Text, nullable=False),
    Column("stored_at", Float, nullable=False),
    Index("evaluations_model_ts", "model", "ts"),
)

runs = Table(
    "runs", metadata,
    Column("id", Text, primary_key=True),
    Column("model", Text, nullable=False),
    Column("pipeline", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("mode", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("next_step", Integer, nullable=False, server_default="0"),
    Column("steps", Text, nullable=False),
    Column("evidence", Text, nullable=False),
    Column("snapshot_path", Text),
    Column("champion_path", Text),
    Column("error", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("runs_model_created", "model", "created_at"),
    Index("runs_state", "state"),
)

run_steps = Table(
    "run_steps", metadata,
    Column("run_id", Text, ForeignKey("runs.id"), nullable=False),
    Column("idx", Integer, nullable=False),
    Column("name", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("artifacts", Text, nullable=False),
    Column("evidence", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("finished_at", Float, nullable=False),
    PrimaryKeyConstraint("run_id", "idx"),
)

transitions = Table(
    "transitions", metadata,
    Column("id", SERIAL, primary_key=True, autoincrement=True),
    Column("run_id", Text, ForeignKey("runs.id"), nullable=False),
    Column("ts", Float, nullable=False),
    Column("from_state", Text),
    Column("to_state", Text, nullable=False),
    Column("step", Integer),
    Column("actor", Text, nullable=False),
    Column("evidence", Text, nullable=False),
    Index("transitions_run", "run_id", "id"),
    sqlite_autoincrement=True,
)

audit = Table(
    "audit", metadata,
    Column("id", SERIAL, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("model", Text),
    Column("run_id", Text),
    Column("evidence", Text, nullable=False),
    Index("audit_ts", "ts"),
    sqlite_autoincrement=True,
)

alerts = Table(
    "alerts", metadata,
    Column("fingerprint", Text, nullable=False),
    Column("starts_at", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("model", Text),
    Column("group_key", Text),
    Column("labels", Text, nullable=False),
    Column("received_at", Float, nullable=False),
    PrimaryKeyConstraint("fingerprint", "starts_at", "status"),
)

model_pauses = Table(
    "model_pauses", metadata,
    Column("model", Text, primary_key=True),
    Column("actor", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("paused_at", Float, nullable=False),
)

rollouts = Table(
    "rollouts", metadata,
    Column("id", Text, primary_key=True),
    Column("model", Text, nullable=False),
    Column("from_version", Integer),
    Column("to_version", Integer, nullable=False),
    Column("strategy", Text, nullable=False),
    Column("phase", Text, nullable=False),
    Column("desired", Text, nullable=False),
    Column("observed", Text, nullable=False),
    Column("reason", Text),
    Column("canary_since", Float),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("rollouts_model", "model", "created_at"),
)

rollout_events = Table(
    "rollout_events", metadata,
    Column("seq", SERIAL, primary_key=True, autoincrement=True),
    Column("rollout_id", Text, ForeignKey("rollouts.id"), nullable=False),
    Column("ts", Float, nullable=False),
    Column("kind", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Index("rollout_events_rollout", "rollout_id", "seq"),
    sqlite_autoincrement=True,
)

# One row per run ever leased: who may change the run now, until when, and the fencing token
# that grows with every new holder so a writer that lost the lease is refused (migration 0002).
run_leases = Table(
    "run_leases", metadata,
    Column("run_id", Text, ForeignKey("runs.id"), primary_key=True),
    Column("owner", Text, nullable=False),
    Column("token", BigInteger, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("acquired_at", Float, nullable=False),
)

# Tables per migration, so a migration creates what it introduced and nothing added later.
INITIAL = (evaluations, runs, run_steps, transitions, audit, alerts, model_pauses, rollouts,
           rollout_events)
LEASES = (run_leases,)
