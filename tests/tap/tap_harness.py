"""``lifeguard tap`` as a child process on a free loopback port, and a published tiny causal LM
served by a replica for it to stand in front of."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

import httpx

from daemon.ingest.broker import free_port
from deploy.repository import ModelRepository
from harness.replicas import REPO_ROOT, ReplicaProcess
from harness.tiny_models import cached_onnx_causal_lm

LM = "writer"


def lm_repository(root: Path) -> ModelRepository:
    """A repository holding the tiny GPT-2 exported to ONNX as ``writer`` version 1."""
    repo = ModelRepository(root / "repo")
    repo.publish(LM, cached_onnx_causal_lm(), run_id="lm1")
    return repo


def lm_replica(root: Path) -> ReplicaProcess:
    """A replica serving ``writer`` that writes no events itself (the tap does)."""
    return ReplicaProcess(lm_repository(root).root, "upstream", [LM], None, root).start()


class TapProcess:
    def __init__(self, upstream: str, kafka: str | None, log_dir: Path, *extra: str) -> None:
        self.port = free_port()
        self.args = [sys.executable, "-c", "from daemon.cli import main; main()", "tap",
                     "--upstream", upstream, "--port", str(self.port), *extra]
        if kafka:
            self.args += ["--kafka", kafka]
        self.log_path = log_dir / f"tap-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> TapProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.args, cwd=REPO_ROOT, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tap exited: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.1)
        raise TimeoutError(f"tap not up in {timeout_s}s")

    def metrics(self) -> str:
        return httpx.get(self.url + "/metrics", timeout=5).text

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
