"""A batch that fails part-way in one sink: the failing events come back to be dead-lettered,
and no sink (metrics above all) sees the rest of the batch twice."""

from __future__ import annotations

import random
from collections.abc import Sequence

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from daemon.assembly import DEFAULT_SETTINGS, FanoutSink
from daemon.events import InferenceEvent
from daemon.ingest.batch import PartitionBatch, RejectedEvents, TopicPartitionId
from daemon.ingest.metrics import IngestMetrics, MetricsSink
from daemon.monitor.window_store import WindowStore
from harness.traffic import inference_record


class PoisonedBy:
    """A sink that fails as a whole on any batch holding the request id it is poisoned by."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.applied: list[str] = []

    def apply(self, batch: PartitionBatch) -> None:
        if any(e.request_id == self.request_id for e in batch.events):
            raise ValueError("poison")
        self.applied.extend(e.request_id for e in batch.events)

    def release(self, partitions: Sequence[TopicPartitionId]) -> None:
        pass


def test_a_batch_failing_part_way_is_counted_once() -> None:
    rng = random.Random(6)
    events = [msgspec.convert(inference_record(rng), InferenceEvent) for _ in range(10)]
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry)
    windows = WindowStore(lambda name: None, DEFAULT_SETTINGS)
    poison = PoisonedBy(events[4].request_id)
    sink = FanoutSink([MetricsSink(metrics), poison, windows])
    with pytest.raises(RejectedEvents) as rejected:
        sink.apply(PartitionBatch("t", 0, events, 100, 109))
    assert list(rejected.value.failures) == [4] and "poison" in rejected.value.failures[4]
    counted = registry.get_sample_value("lifeguard_events_total",
                                        {"model": "sentiment", "version": "1", "status": "ok"})
    errors = registry.get_sample_value("lifeguard_events_total",
                                       {"model": "sentiment", "version": "1", "status": "error"})
    assert (counted or 0) + (errors or 0) == 10  # not 10 + 9
    assert len(poison.applied) == 9
    model = windows.get("sentiment")
    assert model is not None and len(model.current["1"].rows) == 10  # once each
