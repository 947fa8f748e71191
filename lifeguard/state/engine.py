"""Engines for the state store: a SQLite file (the embedded default) or PostgreSQL
(``postgresql://...``, several instances sharing one truth), with the same locking rules.

SQLAlchemy Core 2 + Alembic rather than raw psycopg 3 plus a migration tool: one query builder
renders both dialects from the same code (and its ``insert ... on conflict`` covers both), and
Alembic's history runs unchanged on both, so there is no second schema to keep in step.

Writes go through :func:`write`: on SQLite it takes the database's write lock up front
(``BEGIN IMMEDIATE``: no deadlock between two upgrading readers, WAL lets readers go on), on
PostgreSQL rows are locked with ``SELECT ... FOR UPDATE`` by the caller.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from lifeguard.errors import LifeguardError

_WRITE = "lifeguard_write"


class StoreError(LifeguardError):
    """The state store cannot be used (a bad URL, or written by a newer lifeguard)."""


def state_url(location: Path | str) -> str:
    """A URL for ``location``: URLs pass through, a plain path is a SQLite file."""
    text = str(location)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL; None for any other database."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database)


def make_engine(location: Path | str, pooled: bool = True, timeout_s: float = 30.0) -> Engine:
    """An engine for a path or URL; ``pooled=False`` opens a connection per use (a short-lived
    worker process, or a caller that must not keep a file open). ``timeout_s``: how long to
    wait for SQLite's lock, or to connect to PostgreSQL."""
    url = state_url(location)
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": timeout_s, "check_same_thread": False},
                               **({} if pooled else {"poolclass": NullPool}))
        _sqlite_rules(engine)
        return engine
    if backend == "postgresql":
        if parsed.drivername == "postgresql":  # psycopg 3, not SQLAlchemy's psycopg2 default
            url = parsed.set(drivername="postgresql+psycopg").render_as_string(
                hide_password=False)
        return create_engine(url, pool_pre_ping=True,
                             connect_args={"connect_timeout": max(1, round(timeout_s))},
                             **({"pool_size": 4} if pooled else {"poolclass": NullPool}))
    raise StoreError(f"state.url {parsed.render_as_string()!r}: only sqlite:/// and "
                     "postgresql:// are supported")


def _sqlite_rules(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # The driver's own transaction handling never BEGINs before DDL; take over (SQLAlchemy
        # documents this recipe) so every transaction is explicit.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across crashes
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """One write transaction: committed on success, rolled back on any exception."""
    with engine.connect() as conn:
        conn.execution_options(**{_WRITE: True})
        with conn.begin():
            yield conn


@contextmanager
def read(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn, conn.begin():
        yield conn


@contextmanager
def exclusive(engine: Engine, key: str) -> Iterator[None]:
    """Serialise a read-decide-write sequence (say, a policy's gates and the run they let
    through) across every instance on this database: a PostgreSQL advisory lock on ``key``,
    held by its own transaction until the block ends. On SQLite (one instance) a no-op: the
    caller's own thread lock suffices, and a second connection's write lock would deadlock."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as conn, conn.begin():
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": key})
        yield


def insert_new(conn: Connection, table: Table, **values: Any) -> bool:
    """``INSERT ... ON CONFLICT DO NOTHING`` in the connection's dialect; True when the row
    is new. Told by ``RETURNING`` (both backends have it): an insert's rowcount is not
    reported the same way by every driver."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = (dialect.insert(table).values(**values).on_conflict_do_nothing()
                 .returning(*table.primary_key.columns))
    return conn.execute(statement).first() is not None
