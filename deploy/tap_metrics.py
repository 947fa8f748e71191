"""The tap's own Prometheus metrics, on a registry it is handed: requests relayed by route and
outcome, their latency, and what happened to their events — above all the ones Kafka lost."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from deploy.emitter import EventEmitter

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)


class TapMetrics:
    def __init__(self, registry: CollectorRegistry, emitter: EventEmitter) -> None:
        self.requests = Counter("lifeguard_tap_requests", "Requests relayed to the upstream.",
                                ["route", "status"], registry=registry)
        self.latency = Histogram("lifeguard_tap_request_seconds",
                                 "Time from a request's arrival to the end of its answer.",
                                 ["route"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.feedback = Counter("lifeguard_tap_feedback", "Feedback events accepted.",
                                registry=registry)
        self.unrecorded = Counter("lifeguard_tap_unrecorded_requests",
                                  "Requests served whose event could not be built.",
                                  registry=registry)
        registry.register(_EmitterCollector(emitter))

    def observe(self, route: str, ok: bool, seconds: float) -> None:
        self.requests.labels(route, "ok" if ok else "error").inc()
        self.latency.labels(route).observe(seconds)


class _EmitterCollector(Collector):
    """Read at scrape time from the emitter's counters."""

    def __init__(self, emitter: EventEmitter) -> None:
        self._emitter = emitter

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self._emitter.stats
        events = CounterMetricFamily("lifeguard_tap_events",
                                     "Events by outcome of the Kafka log.", labels=["outcome"])
        for outcome in ("queued", "sent", "dropped", "failed"):
            events.add_metric([outcome], getattr(stats, outcome))
        yield events
        yield CounterMetricFamily("lifeguard_tap_events_lost",
                                  "Events Kafka never got: dropped (buffer full, no broker) "
                                  "plus failed sends.", value=stats.dropped + stats.failed)
        yield GaugeMetricFamily("lifeguard_tap_event_buffer",
                                "Events waiting for Kafka.", value=self._emitter.pending)
