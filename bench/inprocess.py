"""The daemon's ingest path without the broker, for benches that need many events on 2 cores:
JSON message values decoded and validated as the consumer does, applied in partition batches
to the daemon's own sinks (metrics, windows + label join, the evaluator's nudge), with the
evaluator running as the daemon runs it (passes in the evaluation worker process)."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import msgspec
from prometheus_client import CollectorRegistry

from daemon.assembly import EvaluatorNudge, FanoutSink, build_monitoring
from daemon.config import DaemonConfig
from daemon.events import Event, InferenceEvent, decode
from daemon.ingest.batch import PartitionBatch
from daemon.ingest.metrics import IngestMetrics, MetricsSink
from harness.traffic import feedback_record, inference_record

BATCH = 500
T0_MS = 1_764_000_000_000


def messages(models: list[str], total: int, seed: int = 7, step_ms: float = 20.0,
             label_share: float = 0.75, label_delay: int = 40) -> Iterator[bytes]:
    """``total`` inference values, models interleaved at random as one partition carries
    them, each followed ``label_delay`` events later by its feedback for ``label_share``."""
    rng = random.Random(seed)
    encode = msgspec.json.encode
    pending: list[tuple[int, bytes]] = []
    for i in range(total):
        model = models[rng.randrange(len(models))]
        record = inference_record(rng, model=model, ts_ms=T0_MS + i * step_ms)
        yield encode(record)
        if rng.random() < label_share:
            pending.append((i + label_delay, encode(feedback_record(
                str(record["request_id"]), model, rng.choice(["negative", "positive"]),
                T0_MS + (i + label_delay) * step_ms))))
        while pending and pending[0][0] <= i:
            yield pending.pop(0)[1]


class InProcessDaemon:
    """The sinks ``daemon.app.Daemon`` chains, fed straight from message values."""

    def __init__(self, config: DaemonConfig) -> None:
        self.registry = CollectorRegistry()
        self.metrics = IngestMetrics(self.registry)
        self.monitoring = build_monitoring(config, self.registry, [lambda evaluation: None])
        self.evaluator = self.monitoring.evaluator
        self.sink = FanoutSink([MetricsSink(self.metrics), self.monitoring.windows,
                                EvaluatorNudge(self.evaluator)])
        self.offset = 0
        self.inferences = 0

    def start(self) -> None:
        for lane in self.evaluator.lanes:
            lane.backend.ensure()  # imports and warm-up are not part of any measurement
        self.monitoring.start()

    def stop(self) -> None:
        self.monitoring.stop()

    def feed(self, values: Iterator[bytes], inferences: int) -> float:
        """Decode and apply until ``inferences`` inference events went in; returns the wall
        seconds spent in decode + apply (generating the values is not counted)."""
        spent = 0.0
        batch: list[bytes] = []
        goal = self.inferences + inferences
        for value in values:
            batch.append(value)
            if len(batch) == BATCH:
                spent += self._apply(batch)
                batch = []
                if self.inferences >= goal:
                    break
        if batch:
            spent += self._apply(batch)
        return spent

    def _apply(self, values: list[bytes]) -> float:
        start = time.perf_counter()
        events: list[Event] = [decode(v) for v in values]
        self.sink.apply(PartitionBatch("inference", 0, events, self.offset,
                                       self.offset + len(values) - 1))
        self.offset += len(values)
        self.inferences += sum(1 for e in events if type(e) is InferenceEvent)
        return time.perf_counter() - start

    def drain(self, timeout: float = 600.0) -> None:
        """Waits until no pass is due or running (the evaluator caught up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(v == 0.0 for v in self.evaluator.scheduler.lag().values()):
                return
            time.sleep(0.05)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0
