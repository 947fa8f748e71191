"""The replica's own Prometheus metrics, on a registry it is handed (never the global one):
requests by model/version/status, latency, micro-batch sizes, event-log health, loaded versions."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from deploy.emitter import EmitterStats

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class ReplicaMetrics:
    def __init__(self, registry: CollectorRegistry, emitter_stats: EmitterStats,
                 loaded: Callable[[], Mapping[str, int]]) -> None:
        self.registry = registry
        self.requests = Counter("lifeguard_replica_requests", "Inference requests served.",
                                ["model", "version", "status"], registry=registry)
        self.latency = Histogram("lifeguard_replica_request_seconds",
                                 "Inference latency inside the replica.", ["model"],
                                 buckets=_LATENCY_BUCKETS, registry=registry)
        self.batch_size = Histogram("lifeguard_replica_batch_size",
                                    "Requests per ONNX Runtime call.", buckets=_BATCH_BUCKETS,
                                    registry=registry)
        registry.register(_StateCollector(emitter_stats, loaded))

    def observe(self, model: str, version: int | None, ok: bool, seconds: float) -> None:
        self.requests.labels(model, str(version), "ok" if ok else "error").inc()
        self.latency.labels(model).observe(seconds)


class _StateCollector(Collector):
    """Values read at scrape time: what the event log did, which version each model serves."""

    def __init__(self, stats: EmitterStats, loaded: Callable[[], Mapping[str, int]]) -> None:
        self._stats = stats
        self._loaded = loaded

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        events = CounterMetricFamily("lifeguard_replica_events",
                                     "InferenceEvents by outcome of the Kafka log.",
                                     labels=["outcome"])
        for outcome in ("sampled_out", "sent", "dropped", "failed"):
            events.add_metric([outcome], getattr(self._stats, outcome))
        yield events
        served = GaugeMetricFamily("lifeguard_replica_model_version",
                                   "The version each loaded model serves.", labels=["model"])
        for model, version in self._loaded().items():
            served.add_metric([model], version)
        yield served
