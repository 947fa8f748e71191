"""Prometheus metrics of the ingest hot path, on an injected registry.

Events are counted per batch, not per event: a batch's counts are aggregated in plain Python
and histograms are bucketed with numpy, so the cost per event stays a few dict operations.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from daemon.events import FeedbackEvent, InferenceEvent
from daemon.ingest.batch import PartitionBatch, TopicPartitionId

# From a 5 ms classifier to a two-minute generation: LLM serving spans four decades.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                     120.0)
TTFT_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class BatchHistogram(Collector):
    """A labelled histogram that takes a whole batch of observations in one numpy call.

    prometheus_client's Histogram takes a lock and walks the buckets per observation; at
    100k events/s that alone would cost more than decoding them.
    """

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 buckets: Sequence[float]) -> None:
        if list(buckets) != sorted(buckets) or len(set(buckets)) != len(buckets):
            raise ValueError("buckets must be strictly increasing")
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self._series: dict[tuple[str, ...], tuple[np.ndarray, list[float]]] = {}
        self._lock = threading.Lock()

    def observe_many(self, labels: tuple[str, ...], values: Sequence[float] | np.ndarray) -> None:
        if len(values) == 0:
            return
        array = np.asarray(values, dtype=np.float64)
        # side="left": a value equal to a bound belongs to that bound's bucket (le semantics).
        counts = np.bincount(np.searchsorted(self.bounds, array, side="left"),
                             minlength=len(self.bounds) + 1)
        total = float(array.sum())
        with self._lock:
            series = self._series.get(labels)
            if series is None:
                series = self._series[labels] = (np.zeros(len(self.bounds) + 1, np.int64), [0.0])
            series[0][:] += counts
            series[1][0] += total

    def forget(self, labels: tuple[str, ...]) -> None:
        with self._lock:
            self._series.pop(labels, None)

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            snapshot = [(k, c.copy(), s[0]) for k, (c, s) in self._series.items()]
        for labels, counts, total in snapshot:
            cumulative = np.cumsum(counts)
            buckets = [(_bound(b), float(n)) for b, n in zip(self.bounds, cumulative[:-1],
                                                                  strict=True)]
            buckets.append(("+Inf", float(cumulative[-1])))
            family.add_metric(list(labels), buckets, total)
        yield family

    def describe(self) -> Iterable[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)


def _bound(value: float) -> str:
    return repr(float(value))


class _LastEventCollector(Collector):
    """Age of the newest event per model, computed at scrape time."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.newest: dict[str, float] = {}

    def collect(self) -> Iterable[Metric]:
        now = self._clock()
        ts = GaugeMetricFamily("lifeguard_last_event_timestamp_seconds",
                               "Event time of the newest inference event seen, per model.",
                               labels=["model"])
        age = GaugeMetricFamily("lifeguard_last_event_age_seconds",
                                "Seconds since the newest inference event's timestamp.",
                                labels=["model"])
        for model, newest in list(self.newest.items()):
            ts.add_metric([model], newest)
            age.add_metric([model], max(0.0, now - newest))
        yield ts
        yield age

    def describe(self) -> Iterable[Metric]:
        return []


class IngestMetrics:
    """Every metric ingest exports. Registered on the registry it is given, never the global."""

    def __init__(self, registry: CollectorRegistry, clock: Callable[[], float] = time.time) -> None:
        self.events = Counter("lifeguard_events", "Inference events applied, by outcome.",
                              ["model", "version", "status"], registry=registry)
        self.feedback = Counter("lifeguard_feedback_events", "Feedback events applied.",
                                ["model"], registry=registry)
        self.tokens = Counter("lifeguard_tokens", "Tokens processed by the serving fleet.",
                              ["model", "version", "direction"], registry=registry)
        self.replayed = Counter("lifeguard_replayed_events",
                                "Events re-read to rebuild state after a restart or rebalance.",
                                ["topic", "partition"], registry=registry)
        self.dead_lettered = Counter("lifeguard_dead_lettered_messages",
                                     "Messages sent to the dead-letter topic, by reason.",
                                     ["reason"], registry=registry)
        self.batches = Counter("lifeguard_ingest_batches", "Polls that returned records.",
                               registry=registry)
        self.commits = Counter("lifeguard_offset_commits", "Offset commits, by result.",
                               ["result"], registry=registry)
        self.consumer_errors = Counter("lifeguard_consumer_errors",
                                       "Errors in the consumer loop, by kind (all recovered).",
                                       ["kind"], registry=registry)
        self.lag = Gauge("lifeguard_consumer_lag_messages",
                         "Messages behind the partition's high watermark.",
                         ["topic", "partition"], registry=registry)
        self.truncated = Counter(
            "lifeguard_truncated_fields",
            "Event fields cut to kafka.max_text_bytes / max_id_bytes / max_input_fields.",
            ["field"], registry=registry)
        self.clamped = Counter(
            "lifeguard_clamped_events",
            "Events whose time was clamped to kafka.max_event_skew of the broker's record time.",
            ["direction"], registry=registry)
        self.retired_versions = Counter(
            "lifeguard_retired_versions",
            "Model versions retired (idle, over kafka.max_versions): their series removed.",
            registry=registry)
        self.paused_partitions = Gauge(
            "lifeguard_paused_partitions",
            "Partitions paused because the dead-letter topic refuses their records.",
            registry=registry)
        self.assigned = Gauge("lifeguard_assigned_partitions",
                              "Partitions this instance owns.", registry=registry)
        self.latency = BatchHistogram("lifeguard_inference_latency_seconds",
                                      "End-to-end inference latency reported by the fleet.",
                                      ["model", "version"], LATENCY_BUCKETS_S)
        self.ttft = BatchHistogram("lifeguard_inference_ttft_seconds",
                                   "Time to first token, for generators that report it.",
                                   ["model", "version"], TTFT_BUCKETS_S)
        self.last_event = _LastEventCollector(clock)
        for collector in (self.latency, self.ttft, self.last_event):
            registry.register(collector)

    def forget_version(self, model: str, version: str) -> None:
        """A retired version's series leave the exposition (cardinality stays bounded)."""
        self.retired_versions.inc()
        for counter, labels in ((self.events, ("ok", "error")), (self.tokens, ("in", "out"))):
            for last in labels:
                with contextlib.suppress(KeyError):
                    counter.remove(model, version, last)
        self.latency.forget((model, version))
        self.ttft.forget((model, version))

    def forget_partitions(self, partitions: Sequence[TopicPartitionId]) -> None:
        for topic, partition in partitions:
            with contextlib.suppress(KeyError):
                self.lag.remove(topic, str(partition))


class _Tally:
    __slots__ = ("errors", "latencies", "ok", "tokens_in", "tokens_out", "ttfts")

    def __init__(self) -> None:
        self.ok = 0
        self.errors = 0
        self.tokens_in = 0
        self.tokens_out = 0
        self.latencies: list[float] = []
        self.ttfts: list[float] = []


class MetricsSink:
    """The hot-path sink: aggregates one batch in Python, then touches each metric once."""

    def __init__(self, metrics: IngestMetrics) -> None:
        self.metrics = metrics

    def apply(self, batch: PartitionBatch) -> None:
        m = self.metrics
        if batch.replay:
            m.replayed.labels(batch.topic, str(batch.partition)).inc(len(batch.events))
            return
        tallies: dict[tuple[str, str], _Tally] = {}
        feedback: dict[str, int] = {}
        newest: dict[str, float] = {}
        for event in batch.events:
            if type(event) is InferenceEvent:
                key = (event.model, event.model_version)
                tally = tallies.get(key)
                if tally is None:
                    tally = tallies[key] = _Tally()
                if event.status == "ok":
                    tally.ok += 1
                else:
                    tally.errors += 1
                tally.latencies.append(event.latency_ms)
                if event.ttft_ms is not None:
                    tally.ttfts.append(event.ttft_ms)
                if event.tokens_in is not None:
                    tally.tokens_in += event.tokens_in
                if event.tokens_out is not None:
                    tally.tokens_out += event.tokens_out
                ts = event.ts_s
                if ts > newest.get(event.model, 0.0):
                    newest[event.model] = ts
            elif type(event) is FeedbackEvent:
                feedback[event.model] = feedback.get(event.model, 0) + 1
        for (model, version), tally in tallies.items():
            if tally.ok:
                m.events.labels(model, version, "ok").inc(tally.ok)
            if tally.errors:
                m.events.labels(model, version, "error").inc(tally.errors)
            if tally.tokens_in:
                m.tokens.labels(model, version, "in").inc(tally.tokens_in)
            if tally.tokens_out:
                m.tokens.labels(model, version, "out").inc(tally.tokens_out)
            m.latency.observe_many((model, version), np.asarray(tally.latencies) / 1000.0)
            if tally.ttfts:
                m.ttft.observe_many((model, version), np.asarray(tally.ttfts) / 1000.0)
        for model, count in feedback.items():
            m.feedback.labels(model).inc(count)
        last = m.last_event.newest
        for model, ts in newest.items():
            if ts > last.get(model, 0.0):
                last[model] = ts

    def release(self, partitions: Sequence[TopicPartitionId]) -> None:
        self.metrics.forget_partitions(partitions)
