"""Live counts of a simulation, and the frozen snapshot they are read through: what was sent,
what failed, which labels went out, and the ground-truth accuracy of what was answered — per
phase, per model version and over time — as the simulator (which knows every true label) sees it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

_MAX_FAILURE_KINDS = 32  # distinct failure reasons kept; the rest count under "other"


@dataclass(frozen=True)
class AnswerStats:
    """Answered requests of one slice, how many the model got right, and their latency."""

    answered: int = 0
    correct: int = 0
    latency_ms_total: float = 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.answered if self.answered else None

    @property
    def mean_latency_ms(self) -> float | None:
        return self.latency_ms_total / self.answered if self.answered else None

    def add(self, correct: bool, latency_ms: float) -> AnswerStats:
        return AnswerStats(self.answered + 1, self.correct + int(correct),
                           self.latency_ms_total + latency_ms)


@dataclass(frozen=True)
class TimelinePoint:
    """Answers to requests due in [t_s, t_s + bucket) that ``version`` served."""

    t_s: float
    version: str
    answered: int
    correct: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.answered


@dataclass(frozen=True)
class SimulatorSnapshot:
    """Everything the simulator knows at one moment; ``done`` once the run is over."""

    elapsed_s: float
    planned: int
    sent: int
    ok: int
    failed: int
    in_flight: int
    lag_s: float  # how late the latest request left, against its schedule (fleet too slow)
    failures: dict[str, int]
    deliveries_failed: int  # direct mode: events the broker did not acknowledge
    shifted_sent: int  # requests drawn from the shifted domain
    labels_scheduled: int
    labels_sent: int
    labels_failed: int
    labels_dropped: int  # the delay queue was full
    labels_abandoned: int  # still waiting when the run was stopped
    labels_pending: int
    by_phase: dict[str, AnswerStats]
    by_phase_version: dict[str, dict[str, AnswerStats]]
    timeline: tuple[TimelinePoint, ...]
    done: bool
    error: str | None = None
    # When request 0 was due (None before sending began): scenario time t is
    # started_monotonic + t on this host's monotonic clock, started_at + t in epoch seconds.
    started_monotonic: float | None = None
    started_at: float | None = None

    @property
    def progress(self) -> float:
        """Share of the plan sent so far, 0..1."""
        return self.sent / self.planned if self.planned else 1.0

    def accuracy(self, phase: str, version: str | None = None) -> float | None:
        """Ground-truth accuracy of one phase (of one version), None if nothing answered."""
        if version is None:
            stats = self.by_phase.get(phase)
        else:
            stats = self.by_phase_version.get(phase, {}).get(version)
        return stats.accuracy if stats else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data, accuracies included."""
        out = asdict(self)
        for phase, stats in self.by_phase.items():
            out["by_phase"][phase].update(accuracy=stats.accuracy,
                                          mean_latency_ms=stats.mean_latency_ms)
        for phase, versions in self.by_phase_version.items():
            for version, stats in versions.items():
                out["by_phase_version"][phase][version].update(accuracy=stats.accuracy)
        return out


@dataclass
class LiveStats:
    """Mutable counts behind a lock: the sender, the label pump and producer callbacks write,
    any thread reads ``snapshot()``. Memory is bounded by the plan (one timeline bucket per
    ``bucket_s`` of scenario time and served version), never by traffic."""

    planned: int
    bucket_s: float = 5.0
    started: float | None = None  # monotonic, set by ``mark_started``
    started_at: float | None = None  # the same moment in epoch seconds
    sent: int = 0
    ok: int = 0
    failed: int = 0
    in_flight: int = 0
    lag_s: float = 0.0
    deliveries_failed: int = 0
    shifted_sent: int = 0
    labels_scheduled: int = 0
    labels_sent: int = 0
    labels_failed: int = 0
    labels_dropped: int = 0
    labels_abandoned: int = 0
    labels_pending: int = 0
    done: bool = False
    error: str | None = None
    failures: dict[str, int] = field(default_factory=dict)
    by_phase: dict[str, AnswerStats] = field(default_factory=dict)
    by_phase_version: dict[str, dict[str, AnswerStats]] = field(default_factory=dict)
    timeline: dict[tuple[int, str], list[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.bucket_s <= 0:
            raise ValueError(f"bucket_s must be positive, got {self.bucket_s}")

    def mark_started(self) -> float:
        with self.lock:
            self.started = time.monotonic()
            self.started_at = time.time()
            return self.started

    def request_sent(self, shifted: bool) -> None:
        with self.lock:
            self.sent += 1
            self.in_flight += 1
            self.shifted_sent += int(shifted)

    def request_failed(self, reason: str) -> None:
        with self.lock:
            self.in_flight -= 1
            self.failed += 1
            if reason not in self.failures and len(self.failures) >= _MAX_FAILURE_KINDS:
                reason = "other"
            self.failures[reason] = self.failures.get(reason, 0) + 1

    def answered(self, phase: str, version: str, offset_s: float, correct: bool,
                 latency_ms: float) -> None:
        with self.lock:
            self.in_flight -= 1
            self.ok += 1
            self.by_phase[phase] = self.by_phase.get(phase, AnswerStats()).add(
                correct, latency_ms)
            versions = self.by_phase_version.setdefault(phase, {})
            versions[version] = versions.get(version, AnswerStats()).add(correct, latency_ms)
            bucket = self.timeline.setdefault((int(offset_s // self.bucket_s), version), [0, 0])
            bucket[0] += 1
            bucket[1] += int(correct)

    def count(self, name: str, delta: int = 1) -> None:
        """Add to one of the label counters (``labels_sent``, ``labels_dropped``, ...)."""
        with self.lock:
            setattr(self, name, getattr(self, name) + delta)

    def set_lag(self, lag_s: float) -> None:
        with self.lock:
            self.lag_s = max(0.0, lag_s)

    def set_labels_pending(self, n: int) -> None:
        with self.lock:
            self.labels_pending = n

    def finish(self, error: str | None = None) -> None:
        with self.lock:
            self.done = True
            self.error = error

    def snapshot(self) -> SimulatorSnapshot:
        with self.lock:
            timeline = tuple(
                TimelinePoint(bucket * self.bucket_s, version, counts[0], counts[1])
                for (bucket, version), counts in sorted(self.timeline.items()))
            return SimulatorSnapshot(
                elapsed_s=0.0 if self.started is None else time.monotonic() - self.started,
                planned=self.planned,
                sent=self.sent, ok=self.ok, failed=self.failed, in_flight=self.in_flight,
                lag_s=self.lag_s,
                failures=dict(self.failures), deliveries_failed=self.deliveries_failed,
                shifted_sent=self.shifted_sent,
                labels_scheduled=self.labels_scheduled, labels_sent=self.labels_sent,
                labels_failed=self.labels_failed, labels_dropped=self.labels_dropped,
                labels_abandoned=self.labels_abandoned, labels_pending=self.labels_pending,
                by_phase=dict(self.by_phase),
                by_phase_version={p: dict(v) for p, v in self.by_phase_version.items()},
                timeline=timeline, done=self.done, error=self.error,
                started_monotonic=self.started, started_at=self.started_at)
