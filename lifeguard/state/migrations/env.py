"""Alembic's entry point: run the revisions on the connection ``lifeguard.state.migrate``
hands over (inside its locked transaction); there is no offline (SQL script) mode."""

from __future__ import annotations

from alembic import context

from lifeguard.state.tables import metadata


def run() -> None:
    connection = context.config.attributes["connection"]
    # transactional_ddl: SQLite runs DDL in the caller's transaction too, so a failed migration
    # leaves nothing half-created on either backend.
    context.configure(connection=connection, target_metadata=metadata, transactional_ddl=True)
    context.run_migrations()


if hasattr(context, "config"):  # run by Alembic; a plain import (a walk of the package) is inert
    run()
