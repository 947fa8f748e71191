"""Test harness for the fleet: replica processes on loopback, a steady client load that also
sends the true labels as feedback, and model dirs that are deliberately bad."""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from daemon.events import FeedbackEvent, InferenceEvent, Output, encode
from daemon.ingest.broker import free_port
from deploy.judge import TrafficJudge

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL = "sentiment"
TOPIC = "inference"


def swapped_labels(source: Path, out: Path) -> Path:
    """A copy of an exported classifier that answers the wrong class every time."""
    shutil.copytree(source, out)
    info = json.loads((out / "model_info.json").read_text())
    info["labels"] = list(reversed(info["labels"]))
    (out / "model_info.json").write_text(json.dumps(info))
    (out / "artifact.json").unlink(missing_ok=True)  # its sums described the honest copy
    return out


class ServerProcess:
    """A project server (``lifeguard replica``, ``lifeguard tap``) as a child process on a free
    loopback port, its output in a log file."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self, args: list[str]) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(args, cwd=REPO_ROOT, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait_http(self, path: str, timeout_s: float, what: str) -> None:
        """Until ``GET path`` answers 200; a child that exits first fails with its log."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{what} exited: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + path, timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{what} not ready in {timeout_s}s")

    def kill(self) -> None:
        """SIGKILL: the server dies mid-whatever, as a crashed pod would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class ReplicaProcess(ServerProcess):
    """``lifeguard replica`` as a child process on a free loopback port."""

    def __init__(self, repository: Path, name: str, models: list[str], kafka: str | None,
                 log_dir: Path, extra_args: tuple[str, ...] = ()) -> None:
        super().__init__(log_dir / f"{name}.log")
        self.extra_args = extra_args  # more `lifeguard replica` options, e.g. --max-queue
        self.repository = repository
        self.name = name
        self.models = models
        self.kafka = kafka

    def start(self) -> ReplicaProcess:
        args = [sys.executable, "-c", "from daemon.cli import main; main()", "replica",
                "--repository", str(self.repository), "--port", str(self.port),
                "--name", self.name, "--threads", "1", "--device", "cpu"]
        for spec in self.models:
            args += ["--model", spec]
        if self.kafka:
            args += ["--kafka", self.kafka, "--topic", TOPIC]
        self.spawn([*args, *self.extra_args])
        return self

    def wait_ready(self, timeout_s: float = 60.0) -> ReplicaProcess:
        self.wait_http("/v2/health/ready", timeout_s, self.name)
        return self


@dataclass
class LoadStats:
    sent: int = 0
    failed: int = 0
    by_version: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    per_replica_failed: dict[str, int] = field(default_factory=dict)


class SteadyLoad:
    """``threads`` clients, each sending one request every ``interval_s`` round-robin over the
    replicas (plain-text endpoint, client-chosen request id), and the true label as a
    FeedbackEvent so a judge can join accuracy."""

    def __init__(self, urls: list[str], examples: list[tuple[str, str]],
                 kafka: str | None = None, threads: int = 3, interval_s: float = 0.03) -> None:
        self.urls = urls
        self.examples = examples
        self.kafka = kafka
        self.threads = threads
        self.interval_s = interval_s
        self.stats = LoadStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._producer = None

    def __enter__(self) -> SteadyLoad:
        if self.kafka:
            from kafka import KafkaProducer

            self._producer = KafkaProducer(bootstrap_servers=self.kafka, linger_ms=5)
        for i in range(self.threads):
            worker = threading.Thread(target=self._run, args=(i,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(10)
        if self._producer is not None:
            self._producer.flush(5)
            self._producer.close(5)

    def _run(self, index: int) -> None:
        shift = index % len(self.urls)  # each client starts on a different replica
        urls = itertools.cycle(self.urls[shift:] + self.urls[:shift])
        examples = itertools.cycle(self.examples[index::self.threads])
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                url, (text, truth) = next(urls), next(examples)
                request_id = uuid.uuid4().hex
                try:
                    response = client.post(f"{url}/v2/models/{MODEL}/text", content=text,
                                           headers={"x-request-id": request_id,
                                                    "content-type": "text/plain"})
                    ok = response.status_code == 200
                    version = response.json().get("model_version") if ok else None
                    detail = f"{url}: HTTP {response.status_code} {response.text[:200]}"
                except httpx.TransportError as exc:
                    ok, version, detail = False, None, f"{url}: {exc!r}"
                with self._lock:
                    self.stats.sent += 1
                    if ok:
                        self.stats.by_version[str(version)] = (
                            self.stats.by_version.get(str(version), 0) + 1)
                    else:
                        self.stats.failed += 1
                        self.stats.per_replica_failed[url] = (
                            self.stats.per_replica_failed.get(url, 0) + 1)
                        if len(self.stats.failures) < 20:
                            self.stats.failures.append(detail)
                if ok and self._producer is not None:
                    feedback = FeedbackEvent(request_id=request_id, ts=time.time() * 1000,
                                             model=MODEL, label=truth)
                    self._producer.send(TOPIC, key=MODEL.encode(), value=encode(feedback))
                self._stop.wait(self.interval_s)


def served_versions(urls: list[str], model: str = MODEL) -> dict[str, int | None]:
    """What each replica serves of ``model`` now, by asking it (None: unreachable or nothing
    loaded)."""
    out: dict[str, int | None] = {}
    for url in urls:
        try:
            index = httpx.post(f"{url}/v2/repository/index", json={}, timeout=2).json()
        except httpx.TransportError:
            out[url] = None
            continue
        ready = [int(e["version"]) for e in index if e["name"] == model and e["state"] == "READY"]
        out[url] = ready[0] if ready else None
    return out


def synthetic_traffic(judge: TrafficJudge, version: str, n: int, accuracy: float,
                      rng: random.Random, latency_ms: float = 5.0, error_rate: float = 0.0,
                      ts: float = 1000.0) -> None:
    """Seeded inference events and their true labels, as the fleet would log them."""
    for i in range(n):
        truth = rng.choice(["negative", "positive"])
        right = rng.random() < accuracy
        label = truth if right else ("positive" if truth == "negative" else "negative")
        rid = f"{version}-{ts}-{i}"
        failed = rng.random() < error_rate
        judge.observe(InferenceEvent(
            request_id=rid, ts=ts * 1000, model="m", model_version=version,
            latency_ms=latency_ms * rng.uniform(0.8, 1.2), status="error" if failed else "ok",
            output=None if failed else Output(label=label, score=0.9)))
        judge.observe(FeedbackEvent(request_id=rid, ts=ts * 1000, model="m", label=truth))
