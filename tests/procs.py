"""Test helpers that start real processes: the daemon CLI, and scraping its /metrics."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from daemon.ingest.broker import free_port


def wait_until(predicate, timeout_s: float, interval_s: float = 0.1, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")


def metric_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


class DaemonProcess:
    """``lifeguard run`` as a child process with a config written from a dict."""

    def __init__(self, tmp: Path, config: dict, name: str = "daemon") -> None:
        self.port = free_port()
        config = {**config, "api": {**config.get("api", {}), "port": self.port},
                  "state": {"path": str(tmp / f"{name}.db"),
                            "artifacts_dir": str(tmp / "artifacts"), **config.get("state", {})}}
        self.config_path = tmp / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = tmp / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_timeout_s: float = 60.0) -> DaemonProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", "run", "-c",
                                      str(self.config_path)], stdout=log, stderr=log, env=env)
        wait_until(self._ready, ready_timeout_s, 0.2, f"daemon ready ({self.log_path})")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited {self.proc.returncode}: "
                                 f"{self.log_path.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(self.url + "/readyz", timeout=2).status_code == 200
        return False

    def metrics(self) -> str:
        return httpx.get(self.url + "/metrics", timeout=5).text

    def count(self, name: str, **labels: str) -> float:
        return metric_sum(self.metrics(), name, **labels)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout_s: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


@contextlib.contextmanager
def running_daemon(tmp: Path, config: dict, name: str = "daemon") -> Iterator[DaemonProcess]:
    with DaemonProcess(tmp, config, name) as proc:
        yield proc
