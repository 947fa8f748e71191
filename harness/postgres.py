"""A throwaway PostgreSQL cluster for a test session or a benchmark, from Debian's
postgresql-15 server binaries: initdb in a temp dir, a free loopback port, trust auth,
stopped and removed after.

initdb and postgres refuse to run as root, so as root they run as the ``postgres`` user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN = Path(os.environ.get("LIFEGUARD_PG_BIN", "/usr/lib/postgresql/15/bin"))


def available() -> bool:
    return (BIN / "initdb").exists() and (BIN / "pg_ctl").exists()


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


class Cluster:
    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def create_database(self) -> str:
        """A fresh, empty database; returns its URL (one per test keeps tests independent)."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"


@contextmanager
def cluster() -> Iterator[Cluster]:
    from daemon.ingest.broker import free_port

    root = Path(tempfile.mkdtemp(prefix="lifeguard-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    root.chmod(0o700)
    port = free_port()
    subprocess.run(_as_postgres([str(BIN / "initdb"), "-D", str(data), "-U", "postgres",
                                 "-A", "trust", "--no-sync", "-E", "UTF8"]),
                   check=True, capture_output=True)
    # fsync off: a throwaway cluster; the unix socket in its own dir, TCP on loopback only.
    options = (f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
               "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
    subprocess.run(_as_postgres([str(BIN / "pg_ctl"), "-D", str(data), "-o", options,
                                 "-l", str(root / "log"), "-w", "-t", "60", "start"]),
                   check=True, capture_output=True)
    try:
        yield Cluster(root, port)
    finally:
        subprocess.run(_as_postgres([str(BIN / "pg_ctl"), "-D", str(data), "-m", "immediate",
                                     "-w", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
