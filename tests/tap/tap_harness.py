"""``lifeguard tap`` as a child process on a free loopback port, and a published tiny causal LM
served by a replica for it to stand in front of."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from deploy.repository import ModelRepository
from harness.replicas import ReplicaProcess, ServerProcess
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


class TapProcess(ServerProcess):
    def __init__(self, upstream: str, kafka: str | None, log_dir: Path, *extra: str) -> None:
        super().__init__(log_dir / "tap.log")
        self.log_path = log_dir / f"tap-{self.port}.log"
        self.args = [sys.executable, "-c", "from daemon.cli import main; main()", "tap",
                     "--upstream", upstream, "--port", str(self.port), *extra]
        if kafka:
            self.args += ["--kafka", kafka]

    def start(self, timeout_s: float = 30.0) -> TapProcess:
        self.spawn(self.args)
        self.wait_http("/healthz", timeout_s, "tap")
        return self

    def metrics(self) -> str:
        return httpx.get(self.url + "/metrics", timeout=5).text
