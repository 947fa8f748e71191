"""Hot-path metrics: batch aggregation gives exactly what per-event instrumentation would."""

from __future__ import annotations

import random

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from daemon.events import FeedbackEvent, InferenceEvent
from daemon.ingest.batch import PartitionBatch
from daemon.ingest.metrics import LATENCY_BUCKETS_S, BatchHistogram, IngestMetrics, MetricsSink


def _samples(registry: CollectorRegistry, name: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _event(i: int, version: str = "1", status: str = "ok", latency: float = 30.0,
           ttft: float | None = None) -> InferenceEvent:
    return InferenceEvent(request_id=f"r{i}", ts=1_764_000_000_000 + i, model="m",
                          model_version=version, latency_ms=latency, status=status,
                          ttft_ms=ttft, tokens_in=10, tokens_out=2)


def test_batch_histogram_matches_prometheus_histogram() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.lognormal(-3, 1.5, 5000), np.asarray(LATENCY_BUCKETS_S)])
    ours_registry, ref_registry = CollectorRegistry(), CollectorRegistry()
    ours = BatchHistogram("lat_seconds", "x", ["model"], LATENCY_BUCKETS_S)
    ours_registry.register(ours)
    reference = Histogram("lat_seconds", "x", ["model"], buckets=LATENCY_BUCKETS_S,
                          registry=ref_registry)
    for chunk in np.array_split(values, 7):
        ours.observe_many(("a",), chunk)
        for value in chunk:
            reference.labels("a").observe(value)
    for name in ("lat_seconds_bucket", "lat_seconds_count"):
        assert _samples(ours_registry, name) == _samples(ref_registry, name)
    assert _samples(ours_registry, "lat_seconds_sum")[(("model", "a"),)] == pytest.approx(
        _samples(ref_registry, "lat_seconds_sum")[(("model", "a"),)])


def test_batch_histogram_rejects_unsorted_buckets() -> None:
    with pytest.raises(ValueError, match="increasing"):
        BatchHistogram("x", "x", [], [1.0, 0.5])


def test_sink_counts_each_event_once_by_model_version_status() -> None:
    registry = CollectorRegistry()
    sink = MetricsSink(IngestMetrics(registry, clock=lambda: 1_764_000_100.0))
    rng = random.Random(1)
    events = [_event(i, version=rng.choice("12"), status="error" if i % 10 == 0 else "ok",
                     ttft=5.0 if i % 2 else None) for i in range(1000)]
    feedback = [FeedbackEvent(request_id=f"r{i}", ts=0, model="m", label="x") for i in range(7)]
    sink.apply(PartitionBatch("t", 0, [*events[:600], *feedback], 0, 606))
    sink.apply(PartitionBatch("t", 0, events[600:], 607, 1006))
    counts = _samples(registry, "lifeguard_events_total")
    for version in "12":
        for status in ("ok", "error"):
            expected = sum(1 for e in events if e.model_version == version and e.status == status)
            key = (("model", "m"), ("status", status), ("version", version))
            assert counts[key] == expected
    assert sum(_samples(registry, "lifeguard_inference_latency_seconds_count").values()) == 1000
    assert sum(_samples(registry, "lifeguard_inference_ttft_seconds_count").values()) == 500
    assert _samples(registry, "lifeguard_feedback_events_total")[(("model", "m"),)] == 7
    tokens = _samples(registry, "lifeguard_tokens_total")
    assert sum(v for k, v in tokens.items() if ("direction", "in") in k) == 10_000
    age = _samples(registry, "lifeguard_last_event_age_seconds")[(("model", "m"),)]
    assert age == pytest.approx(100.0 - 0.999, abs=1e-6)


def test_replayed_batches_are_not_counted_again() -> None:
    registry = CollectorRegistry()
    sink = MetricsSink(IngestMetrics(registry))
    sink.apply(PartitionBatch("t", 2, [_event(i) for i in range(50)], 0, 49, replay=True))
    assert _samples(registry, "lifeguard_events_total") == {}
    assert _samples(registry, "lifeguard_replayed_events_total") == {
        (("partition", "2"), ("topic", "t")): 50.0}


def test_metrics_live_only_on_the_injected_registry() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    IngestMetrics(first)
    IngestMetrics(second)  # would raise "Duplicated timeseries" on a shared registry
    from prometheus_client import REGISTRY

    assert "lifeguard_events" not in {m.name for m in REGISTRY.collect()}
