"""Alembic's environment and the revisions of the state store, oldest first."""
