"""``lifeguard check-config --probe`` against real things: a real broker and a dead port,
present and missing topics, state files current, newer and corrupt, a repository that is
missing. (A live replica and a stopped one are probed on the demo stack in test_clean_stop.)"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from typer.testing import CliRunner

from daemon.act.store import StateStore
from daemon.cli import app
from daemon.config import StateConfig
from daemon.ingest.broker import ensure_topics, free_port
from daemon.ingest.config import KafkaConfig
from daemon.probes import probe_kafka, probe_replica, probe_state, probe_writable_dir
from lifeguard.state.migrate import head

if TYPE_CHECKING:
    from daemon.ingest.broker import LocalBroker
    from harness.postgres import Cluster


@pytest.mark.parametrize("dead_first", [False, True])
def test_each_broker_and_topic_is_probed(broker: LocalBroker, dead_first: bool) -> None:
    # The topics are read from a broker that answered: a dead bootstrap server, wherever it
    # stands in the list, never costs the topic rows (it once did, when a client given every
    # server spent its timeout retrying the dead one).
    ensure_topics(broker.bootstrap, {"inference": 1})
    dead = f"127.0.0.1:{free_port()}"
    servers = [dead, broker.bootstrap] if dead_first else [broker.bootstrap, dead]
    config = KafkaConfig(bootstrap_servers=servers, topics=["inference"], create_topics=False)
    checks = {c.subject: c for c in probe_kafka(config, timeout_s=1.0)}
    assert checks[f"kafka broker {broker.bootstrap}"].ok
    assert not checks[f"kafka broker {dead}"].ok
    assert "bootstrap" in checks[f"kafka broker {dead}"].detail
    assert checks["kafka topic inference"].ok
    missing = checks["kafka topic lifeguard.dead-letter"]
    assert not missing.ok and "create_topics is false" in missing.detail
    creating = {c.subject: c for c in probe_kafka(config.model_copy(
        update={"create_topics": True}), timeout_s=1.0)}
    assert creating["kafka topic lifeguard.dead-letter"].ok


def test_state_store_current_newer_corrupt_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "state" / "lifeguard.db"
    state = StateConfig(path=path, artifacts_dir=tmp_path / "artifacts")
    fresh, artifacts = probe_state(state)
    assert fresh.ok and "no file yet" in fresh.detail and artifacts.ok
    StateStore(path).close()
    (current, _) = probe_state(state)
    assert current.ok and f"schema {head()} is current" in current.detail
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'f00d'")
    (newer, _) = probe_state(state)
    assert not newer.ok and "newer than this lifeguard" in newer.detail
    path.write_bytes(b"not a database" * 100)
    (corrupt, _) = probe_state(state)
    assert not corrupt.ok and "cannot read" in corrupt.detail


def test_a_postgresql_store_empty_current_and_unreachable(postgres: Cluster,
                                                          tmp_path: Path) -> None:
    url = postgres.create_database()
    state = StateConfig(url=url, artifacts_dir=tmp_path / "artifacts")
    (empty, _) = probe_state(state)
    assert empty.ok and "empty; the daemon creates" in empty.detail
    StateStore(url).close()
    (current, _) = probe_state(state)
    assert current.ok and f"schema {head()} is current" in current.detail
    dead = StateConfig(url=f"postgresql://lifeguard:s3cret@127.0.0.1:{free_port()}/x")
    (unreachable, _) = probe_state(dead, timeout_s=1.0)
    assert not unreachable.ok and "cannot read" in unreachable.detail
    assert "s3cret" not in unreachable.subject + unreachable.detail


def test_repository_and_replica_failures_say_why(tmp_path: Path) -> None:
    assert probe_writable_dir("repository", tmp_path).ok
    missing = probe_writable_dir("repository", tmp_path / "nope")
    assert not missing.ok and missing.detail == "does not exist"
    url = f"http://127.0.0.1:{free_port()}"
    dead = probe_replica(url, timeout_s=1.0)
    assert not dead.ok and dead.subject == f"replica {url}" and "Connect" in dead.detail


def test_check_config_probe_prints_a_line_per_check_and_fails(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    config = tmp_path / "lifeguard.yaml"
    config.write_text(yaml.safe_dump({
        "state": {"path": str(tmp_path / "s.db"), "artifacts_dir": str(tmp_path / "a")},
        "fleet": {"replicas": [url], "repository": str(tmp_path)}}))
    result = CliRunner().invoke(app, ["check-config", "--probe", str(config)])
    lines = result.output.splitlines()
    assert result.exit_code == 1, result.output
    assert any(line.startswith("FAIL replica " + url) for line in lines), result.output
    assert any(line.startswith(f"OK   repository {tmp_path}") for line in lines)
    assert lines[-1] == "4/5 checks passed"
    result = CliRunner().invoke(app, ["check-config", str(config)])
    assert result.exit_code == 0, "without --probe nothing is contacted"
