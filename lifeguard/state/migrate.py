"""Bring a state database to this lifeguard's schema with the one Alembic history in
``lifeguard.state.migrations``, from the daemon and from a deploy worker alike.

Concurrent starters are serialised (SQLite's write lock, a PostgreSQL advisory lock), so two
instances starting at once on a fresh database migrate it once. A database stamped by a newer
lifeguard is refused instead of being written with an older idea of its tables.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

from lifeguard.state.engine import StoreError, write

_LOCATION = str(Path(__file__).resolve().parent / "migrations")
_ADVISORY_KEY = 0x6C69666567  # "lifeg": any constant shared by every lifeguard instance
# The one schema version the pre-Alembic store wrote into its ``meta`` table: revision 0001
# creates only the tables such a file lacks (rollouts, when the daemon never deployed).
_LEGACY_VERSION = "1"


def _config(conn: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", _LOCATION)
    config.attributes["connection"] = conn
    return config


def head() -> str:
    """The newest revision this lifeguard knows."""
    script = ScriptDirectory(_LOCATION)
    current = script.get_current_head()
    assert current is not None
    return current


def status(engine: Engine) -> tuple[str | None, str]:
    """Where the database stands, read only: (its revision, ``current`` | ``behind`` (the
    daemon migrates it on start) | ``empty`` | ``newer`` (written by a newer lifeguard))."""
    known = {rev.revision for rev in ScriptDirectory(_LOCATION).walk_revisions()}
    with engine.connect() as conn:
        at = MigrationContext.configure(conn).get_current_revision()
        if at is None:
            try:
                _check_legacy(conn)
            except StoreError:
                return None, "newer"
            return None, "behind" if inspect(conn).has_table("meta") else "empty"
    if at not in known:
        return at, "newer"
    return at, "current" if at == head() else "behind"


def upgrade(engine: Engine) -> None:
    """Migrate to head in one transaction; raises StoreError for a newer database."""
    script = ScriptDirectory(_LOCATION)
    known = {rev.revision for rev in script.walk_revisions()}
    with write(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_KEY})
        at = MigrationContext.configure(conn).get_current_revision()
        if at is not None and at not in known:
            raise StoreError(f"{engine.url.render_as_string()}: schema revision {at} is newer "
                             f"than this lifeguard ({head()}); upgrade lifeguard")
        if at is None:
            _check_legacy(conn)
        if at != head():
            command.upgrade(_config(conn), "head")


def _check_legacy(conn: Connection) -> None:
    """Refuse a file from before Alembic (its own ``meta`` version table) that is not the one
    version that existed."""
    if not inspect(conn).has_table("meta"):
        return
    row = conn.execute(text("SELECT value FROM meta WHERE key = 'schema_version'")).first()
    if row is not None and row[0] != _LEGACY_VERSION:
        raise StoreError(f"schema version {row[0]} is newer than this lifeguard; "
                         "upgrade lifeguard")
