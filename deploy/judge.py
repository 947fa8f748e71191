"""A reference canary judge over the fleet's own inference events and joined feedback labels,
for running rollouts without the daemon (benchmarks, examples, an external controller). The
daemon hands the rollout a judge built on its own windows instead; the contract is the same.

Breaches are tested, not eyeballed: accuracy fails only when the stable-minus-canary drop
exceeds the allowed drop by more than ``z`` standard errors, so sampling noise on a few dozen
labels does not roll back a good version.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from daemon.events import EventError, FeedbackEvent, InferenceEvent, decode
from deploy.config import CanaryConfig
from deploy.verdict import CanaryQuery, CanaryVerdict
from lifeguard.stats import percentile


@dataclass(frozen=True)
class _Seen:
    ts_s: float
    latency_ms: float
    ok: bool
    request_id: str
    label: str | None


@dataclass(frozen=True)
class VersionStats:
    events: int
    errors: int
    p95_ms: float | None
    labelled: int
    correct: int

    @property
    def error_rate(self) -> float:
        return self.errors / self.events if self.events else 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None


class TrafficJudge:
    """Feed it events with ``observe``; call it with a CanaryQuery. Memory is bounded by
    ``max_events`` per version and ``max_labels`` joined labels (oldest dropped first)."""

    def __init__(self, model: str, config: CanaryConfig, z: float = 2.33,
                 max_events: int = 50_000, max_labels: int = 100_000) -> None:
        if z <= 0 or max_events < 1 or max_labels < 1:
            raise ValueError("z, max_events and max_labels must be positive")
        self.model = model
        self.config = config
        self.z = z
        self._events: dict[str, collections.deque[_Seen]] = collections.defaultdict(
            lambda: collections.deque(maxlen=max_events))
        self._labels: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._max_labels = max_labels

    def observe(self, event: InferenceEvent | FeedbackEvent) -> None:
        if event.model != self.model:
            return
        if isinstance(event, FeedbackEvent):
            if event.label is not None:
                self._labels[event.request_id] = str(event.label)
                if len(self._labels) > self._max_labels:
                    self._labels.popitem(last=False)
            return
        label = event.output.label if event.output is not None else None
        self._events[event.model_version].append(_Seen(
            event.ts_s, event.latency_ms, event.status == "ok", event.request_id,
            None if label is None else str(label)))

    def stats(self, version: int, since_s: float) -> VersionStats:
        seen = [s for s in self._events.get(str(version), ()) if s.ts_s >= since_s]
        p95 = percentile([s.latency_ms for s in seen if s.ok], 95)
        joined = [(s.label, self._labels[s.request_id]) for s in seen
                  if s.ok and s.request_id in self._labels]
        return VersionStats(events=len(seen), errors=sum(not s.ok for s in seen), p95_ms=p95,
                            labelled=len(joined), correct=sum(p == t for p, t in joined))

    def __call__(self, query: CanaryQuery) -> CanaryVerdict:
        cfg = self.config
        canary = self.stats(query.canary_version, query.since_s)
        stable = (self.stats(query.stable_version, query.since_s)
                  if query.stable_version is not None else None)
        evidence: dict[str, float | int | str | None] = {
            "canary_events": canary.events, "canary_error_rate": canary.error_rate,
            "canary_p95_ms": canary.p95_ms, "canary_accuracy": canary.accuracy,
            "canary_labelled": canary.labelled,
            "stable_events": stable.events if stable else None,
            "stable_p95_ms": stable.p95_ms if stable else None,
            "stable_accuracy": stable.accuracy if stable else None,
            "stable_labelled": stable.labelled if stable else None,
        }

        def verdict(state: Any, reason: str) -> CanaryVerdict:
            return CanaryVerdict(state, reason, canary.events, evidence)

        # Breaches may be called early, on a quarter of the events a promotion needs.
        if canary.events >= max(10, cfg.min_events // 4):
            if canary.error_rate > cfg.max_error_rate:
                return verdict("unhealthy", f"error rate {canary.error_rate:.3f} > "
                                            f"{cfg.max_error_rate}")
            if canary.p95_ms is not None and canary.p95_ms > cfg.latency_slo_ms:
                return verdict("unhealthy", f"p95 {canary.p95_ms:.1f} ms > SLO "
                                            f"{cfg.latency_slo_ms} ms")
            if (stable and stable.p95_ms and canary.p95_ms is not None
                    and stable.events >= 10
                    and canary.p95_ms > cfg.max_latency_ratio * stable.p95_ms):
                return verdict("unhealthy", f"p95 {canary.p95_ms:.1f} ms > "
                                            f"{cfg.max_latency_ratio} x stable "
                                            f"{stable.p95_ms:.1f} ms")
        drop = self._accuracy_drop(canary, stable)
        if drop is not None:
            evidence["accuracy_drop"], evidence["accuracy_drop_lower"] = drop
            if drop[1] > cfg.max_accuracy_drop:
                return verdict("unhealthy", f"accuracy drop {drop[0]:.3f} (lower bound "
                                            f"{drop[1]:.3f}) > {cfg.max_accuracy_drop}")
        if canary.events < cfg.min_events:
            return verdict("insufficient", f"{canary.events}/{cfg.min_events} canary events")
        if canary.labelled < cfg.min_labelled:
            return verdict("insufficient", f"{canary.labelled}/{cfg.min_labelled} labels")
        return verdict("healthy", "within error, latency and accuracy bounds")

    def _accuracy_drop(self, canary: VersionStats,
                       stable: VersionStats | None) -> tuple[float, float] | None:
        """(drop, one-sided lower confidence bound of the drop), when both sides have labels."""
        need = max(1, self.config.min_labelled)
        if stable is None or canary.labelled < need or stable.labelled < need:
            return None
        a_s, a_c = stable.accuracy or 0.0, canary.accuracy or 0.0
        se = math.sqrt(a_s * (1 - a_s) / stable.labelled + a_c * (1 - a_c) / canary.labelled)
        drop = a_s - a_c
        return drop, drop - self.z * max(se, 1e-9)


class KafkaTrafficJudge(TrafficJudge):
    """TrafficJudge fed from the inference topic; each verdict first reads what has arrived."""

    def __init__(self, bootstrap: str, topic: str, model: str, config: CanaryConfig,
                 **kwargs: Any) -> None:
        super().__init__(model, config, **kwargs)
        from kafka import KafkaConsumer

        self._consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                       auto_offset_reset="earliest", enable_auto_commit=False)

    def __call__(self, query: CanaryQuery) -> CanaryVerdict:
        self.drain()
        return super().__call__(query)

    def drain(self, max_polls: int = 50) -> int:
        count = 0
        for _ in range(max_polls):
            batches = self._consumer.poll(timeout_ms=100)
            if not batches:
                break
            for event in _decode_all(r.value for rs in batches.values() for r in rs):
                self.observe(event)
                count += 1
        return count

    def close(self) -> None:
        self._consumer.close()


def _decode_all(values: Iterable[bytes]) -> Iterable[InferenceEvent | FeedbackEvent]:
    for value in values:
        try:
            yield decode(value)
        except EventError:
            continue  # the daemon dead-letters these; a judge just skips them
