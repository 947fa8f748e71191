"""``consumer.committed()`` failing while a newly assigned partition is replayed must not end
ingest: the failure is counted, reading goes on, and the replay is tried again."""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from typing import Any

import pytest
from kafka import KafkaConsumer
from kafka.errors import KafkaTimeoutError
from procs import wait_until
from prometheus_client import CollectorRegistry

from daemon.ingest.batch import PartitionBatch, TopicPartitionId
from daemon.ingest.broker import LocalBroker, ensure_topics
from daemon.ingest.config import KafkaConfig
from daemon.ingest.consumer import Ingestor
from daemon.ingest.metrics import IngestMetrics
from harness.traffic import encoded, inference_record, make_producer, produce

pytestmark = pytest.mark.integration
TOPIC = "ingest-committed"


class Collect:
    """Records what was applied and whether it came as a replay."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fresh: list[str] = []
        self.replayed: list[str] = []

    def apply(self, batch: PartitionBatch) -> None:
        with self.lock:
            (self.replayed if batch.replay else self.fresh).extend(
                e.request_id for e in batch.events)

    def release(self, partitions: Sequence[TopicPartitionId]) -> None:
        pass


def _ingestor(bootstrap: str, sink: Collect, registry: CollectorRegistry) -> Ingestor:
    config = KafkaConfig(bootstrap_servers=[bootstrap], topics=[TOPIC], group_id="committed",
                         replay_messages=20, session_timeout_ms=6000, heartbeat_interval_ms=1000)
    return Ingestor(config, [bootstrap], sink, IngestMetrics(registry))


def test_committed_failing_during_replay_does_not_stop_ingest(
        broker: LocalBroker, monkeypatch: pytest.MonkeyPatch) -> None:
    ensure_topics(broker.bootstrap, {TOPIC: 1})
    rng = random.Random(14)
    producer = make_producer(broker.bootstrap)
    produce(producer, TOPIC, encoded(inference_record(rng) for _ in range(50)))
    first_sink = Collect()
    first = _ingestor(broker.bootstrap, first_sink, CollectorRegistry())
    first.start()
    wait_until(lambda: len(first_sink.fresh) == 50, 30, what="first pass applied")
    first.stop()  # commits offset 50

    real = KafkaConsumer.committed
    failures = {"left": 3}

    def flaky(self: KafkaConsumer, *args: Any, **kwargs: Any) -> Any:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise KafkaTimeoutError("coordinator unavailable")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(KafkaConsumer, "committed", flaky)
    sink, registry = Collect(), CollectorRegistry()
    second = _ingestor(broker.bootstrap, sink, registry)
    second.start()
    try:
        produce(producer, TOPIC, encoded(inference_record(rng) for _ in range(30)))
        wait_until(lambda: len(sink.fresh) >= 30 and len(sink.replayed) >= 20, 30,
                   what="new events applied and the replay done once committed() answers")
        assert second.error is None and second.alive
    finally:
        second.stop()
        producer.close()
    assert failures["left"] == 0
    assert registry.get_sample_value("lifeguard_consumer_errors_total",
                                     {"kind": "committed_KafkaTimeoutError"}) == 3
    assert not set(sink.fresh) & set(first_sink.fresh)  # the history came back as replay only
    assert set(sink.replayed) == set(first_sink.fresh[-20:])
