"""Run leases with fencing tokens: which instance may change a run, until when."""

from __future__ import annotations

from alembic import op
from sqlalchemy import MetaData

from lifeguard.state.tables import INITIAL, LEASES

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    copy = MetaData()  # with the tables it references, so its foreign keys resolve
    tables = [t.to_metadata(copy) for t in (*INITIAL, *LEASES)]
    for table in tables[len(INITIAL):]:
        table.create(op.get_bind())


def downgrade() -> None:
    raise NotImplementedError("the state store is never downgraded")
