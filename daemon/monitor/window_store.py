"""The windows of every model this instance owns: the ingest sink, and their metrics.

Ownership follows partition assignment: a model's state lives where its partition is, and is
dropped when the partition moves (the new owner rebuilds it by replaying).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from daemon.events import FeedbackEvent, InferenceEvent
from daemon.ingest.batch import PartitionBatch, RejectedEvents, TopicPartitionId
from daemon.monitor.windows import ModelWindows, MonitoringSettings

SettingsFor = Callable[[str], MonitoringSettings | None]


class WindowStore:
    """Routes each event to its model's windows. Models the config does not name are tracked
    with default settings up to ``max_models``; beyond that their events are only counted."""

    def __init__(self, settings_for: SettingsFor, default: MonitoringSettings,
                 max_models: int = 100,
                 reference_for: Callable[[str], object | None] = lambda name: None) -> None:
        self._settings_for = settings_for
        self._default = default
        self._reference_for = reference_for
        self.max_models = max_models
        self.models: dict[str, ModelWindows] = {}
        self.untracked = 0
        self._lock = threading.Lock()

    def get(self, model: str) -> ModelWindows | None:
        return self.models.get(model)

    def apply(self, batch: PartitionBatch) -> None:
        partition = (batch.topic, batch.partition)
        current: ModelWindows | None = None
        # Per-event offsets are not carried; an evaluation is tied to the batch it saw last.
        offset = batch.last_offset
        failures: dict[int, str] = {}
        try:
            for i, event in enumerate(batch.events):
                model = event.model
                if current is None or current.name != model:
                    if current is not None:
                        current.lock.release()
                    current = self._model(model, partition)
                    if current is None:
                        self.untracked += 1
                        continue
                    current.lock.acquire()
                    current.replaying = batch.replay
                try:
                    if type(event) is InferenceEvent:
                        current.add_inference(event, offset)
                    elif type(event) is FeedbackEvent:
                        current.add_feedback(event)
                except Exception as exc:  # one poison event must not cost the batch
                    failures[i] = f"{type(exc).__name__}: {exc}"
        finally:
            if current is not None:
                current.lock.release()
        if failures:
            # The rest is applied: ingest dead-letters these and does not apply them again.
            raise RejectedEvents(failures)

    def _model(self, name: str, partition: TopicPartitionId) -> ModelWindows | None:
        windows = self.models.get(name)
        if windows is not None:
            return windows
        with self._lock:
            settings = self._settings_for(name)
            if settings is None:
                if len(self.models) >= self.max_models:
                    return None
                settings = self._default
            reference = self._reference_for(name)
            windows = ModelWindows(name, settings, partition, reference)  # type: ignore[arg-type]
            self.models[name] = windows
            return windows

    def release(self, partitions: Sequence[TopicPartitionId]) -> None:
        gone = set(partitions)
        with self._lock:
            for name in [n for n, w in self.models.items() if w.partition in gone]:
                del self.models[name]


class WindowCollector(Collector):
    """Window sizes, evictions and the label join's counts, read at scrape time."""

    def __init__(self, store: WindowStore) -> None:
        self.store = store

    def collect(self) -> Iterable[Metric]:
        size = GaugeMetricFamily("lifeguard_window_events",
                                 "Events in the current window.", labels=["model", "version"])
        evicted = CounterMetricFamily("lifeguard_window_evicted_events",
                                      "Events that left the current window (count or age).",
                                      labels=["model", "version"])
        reference = GaugeMetricFamily("lifeguard_reference_events",
                                      "Events in the frozen reference.",
                                      labels=["model", "version"])
        joined = CounterMetricFamily("lifeguard_labels_joined",
                                     "Feedback joined to its inference.", labels=["model"])
        expired = CounterMetricFamily("lifeguard_labels_expired",
                                      "Inferences whose label never came within the TTL.",
                                      labels=["model"])
        orphaned = CounterMetricFamily("lifeguard_labels_orphaned",
                                       "Feedback whose inference never came within the TTL.",
                                       labels=["model"])
        duplicate = CounterMetricFamily("lifeguard_labels_duplicate",
                                        "Feedback for a request already labelled (ignored).",
                                        labels=["model"])
        dropped = CounterMetricFamily("lifeguard_labels_dropped",
                                      "Entries dropped from a full join buffer.",
                                      labels=["model", "buffer"])
        pending = GaugeMetricFamily("lifeguard_labels_pending",
                                    "Entries waiting in the join buffers.",
                                    labels=["model", "buffer"])
        untracked = CounterMetricFamily("lifeguard_untracked_events",
                                        "Events of models beyond max_models (counted only).")
        untracked.add_metric([], self.store.untracked)
        for name, windows in list(self.store.models.items()):
            with windows.lock:
                for version, rows in windows.current.items():
                    size.add_metric([name, version], len(rows.rows))
                    evicted.add_metric([name, version], rows.evicted)
                for version, rows in windows.references.items():
                    reference.add_metric([name, version], len(rows.rows))
                counts = windows.join.counts
                joined.add_metric([name], counts.joined)
                expired.add_metric([name], counts.expired)
                orphaned.add_metric([name], counts.orphaned)
                duplicate.add_metric([name], counts.duplicate)
                for buffer, n in counts.dropped.items():
                    dropped.add_metric([name, buffer], n)
                pending.add_metric([name, "inference"], windows.join.pending)
                pending.add_metric([name, "feedback"], windows.join.early)
        yield from (size, evicted, reference, joined, expired, orphaned, duplicate, dropped,
                    pending, untracked)

    def describe(self) -> Iterable[Metric]:
        return []


def register(store: WindowStore, registry: CollectorRegistry) -> None:
    registry.register(WindowCollector(store))
