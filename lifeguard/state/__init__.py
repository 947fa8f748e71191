"""The durable state every room shares: one SQLAlchemy schema, one Alembic history, and the
engine rules (SQLite's write lock, PostgreSQL's row locks) for the embedded and shared stores."""
