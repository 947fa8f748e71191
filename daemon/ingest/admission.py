"""Which models and versions ingest lets through: producers choose these labels, so each one
costs metric series and memory. Configured models always; others first come, up to a cap.

A model's versions are capped too. A new version beyond the cap retires the least recently
seen one if that has been idle (by the daemon's clock, not the producer's); otherwise the
event is refused. Refused events are dead-lettered by the caller with the reason given here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from daemon.events import Event, InferenceEvent
from daemon.ingest.batch import TopicPartitionId

UNKNOWN_MODEL = "unknown_model"
TOO_MANY_VERSIONS = "too_many_versions"


@dataclass(slots=True)
class _Model:
    partition: TopicPartitionId
    guest: bool  # admitted under max_models, not named in the config
    versions: dict[str, float] = field(default_factory=dict)  # version -> last seen (monotonic)


class Admission:
    def __init__(self, configured: Iterable[str], max_models: int, max_versions: int,
                 version_idle_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.configured = frozenset(configured)
        self.max_models = max_models
        self.max_versions = max_versions
        self.version_idle_s = version_idle_s
        self.clock = clock
        self._models: dict[str, _Model] = {}
        self._guests = 0
        self._retired: list[tuple[str, str]] = []

    def check(self, event: Event, partition: TopicPartitionId, now: float
              ) -> tuple[str, str] | None:
        """None to admit the event, else (reason, detail) for the dead letter."""
        model = self._models.get(event.model)
        if model is None:
            guest = event.model not in self.configured
            if guest and self._guests >= self.max_models:
                return UNKNOWN_MODEL, (f"model {event.model[:200]!r} is not configured and "
                                       f"{self.max_models} others were admitted "
                                       f"(kafka.max_models)")
            self._guests += guest
            model = self._models[event.model] = _Model(partition, guest)
        if type(event) is not InferenceEvent:
            return None
        versions = model.versions
        version = event.model_version
        if version in versions:
            versions[version] = now
            return None
        if len(versions) >= self.max_versions:
            oldest = min(versions, key=versions.__getitem__)
            if now - versions[oldest] < self.version_idle_s:
                return TOO_MANY_VERSIONS, (
                    f"model {event.model!r} already has {self.max_versions} active versions "
                    f"(kafka.max_versions); {version[:200]!r} refused")
            del versions[oldest]
            self._retired.append((event.model, oldest))
        versions[version] = now
        return None

    def take_retired(self) -> list[tuple[str, str]]:
        """(model, version) pairs retired since the last call: their series are to go."""
        retired, self._retired = self._retired, []
        return retired

    def release(self, partitions: Iterable[TopicPartitionId]) -> None:
        """Models of partitions that moved away free their slots."""
        gone = set(partitions)
        for name in [n for n, m in self._models.items() if m.partition in gone]:
            self._guests -= self._models.pop(name).guest

    @property
    def models(self) -> int:
        return len(self._models)
