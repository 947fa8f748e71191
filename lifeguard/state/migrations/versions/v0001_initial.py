"""The schema of the pre-Alembic store: evaluations, runs, steps, transitions, audit, alerts,
pauses, rollouts and their events. Tables that already exist (a file from before) are kept."""

from __future__ import annotations

from alembic import op
from sqlalchemy import MetaData, inspect

from lifeguard.state.tables import INITIAL

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    existing = set(inspect(bind).get_table_names())
    # The tables as ``tables.py`` defines them today: a later change to one of them comes with
    # its own revision, and then this one spells the table out as it was.
    copy = MetaData()
    tables = [t.to_metadata(copy) for t in INITIAL]
    for table in tables:
        if table.name not in existing:
            table.create(bind)


def downgrade() -> None:
    raise NotImplementedError("the state store is never downgraded")
