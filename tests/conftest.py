"""Shared fixtures: a real local broker per test module, a PostgreSQL cluster per session, the
state store on either backend, seeded randomness, temp dirs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

    from daemon.ingest.broker import LocalBroker
    from harness.postgres import Cluster

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="module")
def broker() -> Iterator[LocalBroker]:
    from daemon.ingest.broker import LocalBroker

    with LocalBroker() as local:
        yield local


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """One throwaway PostgreSQL cluster for the session (``make test`` installs postgresql-15)."""
    import harness.postgres as pg

    if not pg.available():
        pytest.fail(f"PostgreSQL server binaries missing under {pg.BIN}: "
                    "apt-get install postgresql-15 (make test does)")
    with pg.cluster() as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty state store location on each backend: a SQLite file, a new database."""
    if request.param == "sqlite":
        return str(tmp_path / "state.db")
    cluster: Cluster = request.getfixturevalue("postgres")
    return cluster.create_database()
