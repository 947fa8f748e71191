"""Starts the embedded stack as real processes on loopback and stops it cleanly.

The broker (tansu), N serving replicas (``lifeguard replica``) writing inference events to it,
and the daemon (``lifeguard run``) with a config written for this stack. Everything logs under
``<root>/logs``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from daemon.ingest.broker import LocalBroker, ensure_topics, free_port
from lifeguard.processes import own_group_dying_with_parent

MODEL = "sentiment"
TOPIC = "inference"
TOKEN = "lifeguard-demo-token"


@dataclass
class LoopSettings:
    """The knobs of the closed loop a stack runs; defaults suit the demo on two CPU cores."""

    replicas: int = 3
    mode: str = "auto"  # auto | approve | dry-run
    window: int = 1200  # also what a retrain learns from: more rows, a better candidate
    reference: int = 400
    evaluate_every: int = 150
    min_labels: int = 150
    hold: int = 2
    canary_events: int = 150
    canary_labels: int = 40
    train_epochs: int = 3
    train_lr: float = 5e-5  # MiniLM; a tiny model trained from scratch wants ~2e-3
    train_max_length: int = 64
    embedding_sample: int = 150
    extra_model: dict[str, Any] = field(default_factory=dict)
    model: str = MODEL  # the served model's name
    task: str = "sequence-classification"  # or "causal-lm": harness.generator_stack's config


def stop_processes(procs: list[subprocess.Popen[bytes]], timeout_s: float) -> None:
    """SIGTERM each leader, wait for all together until ``timeout_s``, then SIGKILL what is
    left of each process group (a leader's own children included)."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.0, deadline - time.monotonic()))
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers in its group, or a stuck leader
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(2)


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, OSError):
            if check():
                return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready within {timeout_s:.0f}s")


class Stack:
    def __init__(self, root: Path, settings: LoopSettings | None = None) -> None:
        self.root = Path(root).resolve()
        self.settings = settings or LoopSettings()
        self.logs = self.root / "logs"
        self.repository = self.root / "repository"
        self.broker: LocalBroker | None = None
        self.replica_urls: list[str] = []
        self.daemon_url = ""
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    # -- start --------------------------------------------------------------------------------

    def start(self, checkpoint: Path, deployable: Path) -> Stack:
        from deploy.repository import ModelRepository

        self.logs.mkdir(parents=True, exist_ok=True)
        self.broker = LocalBroker(log_path=self.logs / "broker.log").start()
        ensure_topics(self.broker.bootstrap, {TOPIC: 1, "lifeguard.dead-letter": 1})
        repository = ModelRepository(self.repository)
        if repository.latest(self.settings.model) is None:
            repository.publish(self.settings.model, deployable, trigger="initial deployment")
        # Spawned together, then awaited: each replica's start-up is mostly imports.
        pending = [self._start_replica(i) for i in range(self.settings.replicas)]
        for i, url in enumerate(pending):
            wait_for(lambda url=url: httpx.get(f"{url}/v2/health/ready",  # type: ignore[misc]
                                               timeout=2).status_code == 200,
                     120, f"replica-{i}")
            self.replica_urls.append(url)
        self._start_daemon(checkpoint)
        return self

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1",
               "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", *args], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                preexec_fn=own_group_dying_with_parent)
        self._procs.append((name, proc))
        return proc

    def _start_replica(self, i: int) -> str:
        """Spawn replica ``i``; returns its URL (the caller waits for it to be ready)."""
        assert self.broker is not None
        port = free_port()
        self._spawn(f"replica-{i}", ["replica", "--repository", str(self.repository),
                                     "--model", self.settings.model, "--port", str(port),
                                     "--name", f"replica-{i}", "--kafka", self.broker.bootstrap,
                                     "--topic", TOPIC, "--threads", "1"])
        return f"http://127.0.0.1:{port}"

    def daemon_config(self, checkpoint: Path, port: int) -> dict[str, Any]:
        s = self.settings
        assert self.broker is not None
        model: dict[str, Any] = {
            "name": s.model,
            "base_model": str(checkpoint),
            "window": {"size": s.window},
            "reference": {"first_n": s.reference},
            "labels": {"ttl": 900, "early_ttl": 300},
            "evaluation": {"interval": 10, "every_events": s.evaluate_every,
                           "min_events": s.reference, "embedding_sample": s.embedding_sample,
                           "report_dir": str(self.root / "reports")},
            "detectors": {"accuracy": {"min_labels": s.min_labels, "tolerance": 0.05},
                          "latency": {"p95_ms": 2000.0}},
            "policy": {
                "trigger": {"any": [{"key": "accuracy.accuracy_vs_reference"},
                                    {"key": "accuracy.accuracy"}]},
                "hold": s.hold, "min_samples": 100, "cooldown": "10m",
                "max_runs_per_day": 3, "mode": s.mode, "pipeline": "retrain",
            },
            **s.extra_model,
        }
        train = {"epochs": s.train_epochs, "max_length": s.train_max_length,
                 "batch_size": 32, "learning_rate": s.train_lr}
        config = {
            "kafka": {"bootstrap_servers": [self.broker.bootstrap], "topics": [TOPIC],
                      "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000},
            "api": {"port": port, "token": TOKEN},
            "state": {"path": str(self.root / "state" / "lifeguard.db"),
                      "artifacts_dir": str(self.root / "artifacts")},
            "models": [model],
            "pipelines": {"retrain": {"backoff": "2s", "steps": [
                {"name": "fine_tune", "params": train, "timeout": "30m"},
                {"name": "evaluate", "params": {"gate_margin": 0.0, "gate_floor": 0.6}},
                {"name": "export_onnx", "params": {"max_length": s.train_max_length}},
                {"name": "quantize", "params": {"max_quantize_drop": 0.02}},
                {"name": "deploy", "timeout": "20m"},
            ]}},
            "runner": {"max_concurrent_runs": 1, "poll_interval": "1s"},
            "fleet": {"replicas": self.replica_urls, "repository": str(self.repository),
                      "rollout": {"strategy": "canary", "canary": {
                          "replicas": 1, "min_events": s.canary_events,
                          "min_labelled": s.canary_labels, "latency_slo_ms": 2000.0,
                          "max_latency_ratio": 5.0, "max_accuracy_drop": 0.05,
                          "timeout_s": 600.0, "poll_interval_s": 1.0}}},
        }
        if s.task == "causal-lm":
            from harness.generator_stack import generator_config

            generator_config(config, s)
        return config

    def _start_daemon(self, checkpoint: Path) -> None:
        port = free_port()
        config = self.root / "lifeguard.yaml"
        config.write_text(yaml.safe_dump(self.daemon_config(checkpoint, port), sort_keys=False))
        self._spawn("daemon", ["run", "-c", str(config)])
        self.daemon_url = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{self.daemon_url}/readyz", timeout=2).status_code == 200,
                 120, "the daemon")

    # -- inspect ------------------------------------------------------------------------------

    def api(self, path: str) -> Any:
        response = httpx.get(f"{self.daemon_url}/api/v1{path}", timeout=10,
                             headers={"Authorization": f"Bearer {TOKEN}"})
        response.raise_for_status()
        return response.json()

    def served_versions(self) -> list[int | None]:
        """What each replica serves now (the repository index's ready version)."""
        served: list[int | None] = []
        for url in self.replica_urls:
            version = None
            with contextlib.suppress(httpx.HTTPError, ValueError):
                index = httpx.post(f"{url}/v2/repository/index", json={}, timeout=5).json()
                ready = [int(m["version"]) for m in index
                         if m.get("name") == self.settings.model and m.get("state") == "READY"]
                version = max(ready) if ready else None
            served.append(version)
        return served

    def alive(self) -> dict[str, bool]:
        return {name: proc.poll() is None for name, proc in self._procs}

    # -- stop ---------------------------------------------------------------------------------

    def pids(self) -> list[int]:
        """Every child process this stack started (the broker included) that still runs."""
        pids = [proc.pid for _, proc in self._procs if proc.poll() is None]
        if self.broker is not None and self.broker.pid is not None:
            pids.append(self.broker.pid)
        return pids

    def stop(self, timeout_s: float = 4.0) -> None:
        """Stop in dependency order within ``timeout_s``: SIGTERM the daemon first (it commits
        its offsets while the broker is up), then the replicas (they flush their event logs to
        the broker), wait for them together, and stop the broker last. A child still running
        at the deadline is killed with its whole process group, so nothing outlives the
        stack. The simulator, which feeds them all, is stopped before this by its owner."""
        started = time.monotonic()
        ordered = sorted(self._procs, key=lambda p: p[0] != "daemon")
        stop_processes([proc for _, proc in ordered], timeout_s)
        self.note(f"daemon and replicas stopped in {time.monotonic() - started:.2f}s")
        self._procs.clear()
        if self.broker is not None:
            started = time.monotonic()
            self.broker.stop()
            self.broker = None
            self.note(f"broker stopped in {time.monotonic() - started:.2f}s")

    def note(self, text: str) -> None:
        """One timestamped line in ``logs/stack.log``: what the stack did, for a post-mortem."""
        if self.logs.is_dir():
            with open(self.logs / "stack.log", "a") as log:
                log.write(f"{time.strftime('%H:%M:%S')}.{int(time.time() * 1000) % 1000:03d} "
                          f"{text}\n")

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
