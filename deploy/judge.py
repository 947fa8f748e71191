"""A reference canary judge over the fleet's own inference events and joined feedback, for
running rollouts without the daemon (benchmarks, examples, an external controller). The
daemon hands the rollout a judge built on its own windows instead; the contract is the same.

A classifier is judged on errors, p95 latency and accuracy on joined labels; a generator
(its events report a TTFT or an output text) on errors, TTFT and time per output token against
the stable version, and its mean rating and reference score (ROUGE-L F1 of answer vs corrected
answer) where feedback exists. Quality breaches are tested, not eyeballed: a drop fails only
when it exceeds the allowed drop by more than ``z`` standard errors, so sampling noise on a few
dozen labels does not roll back a good version.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from daemon.events import EventError, FeedbackEvent, InferenceEvent, decode
from deploy.config import CanaryConfig
from deploy.verdict import CanaryQuery, CanaryVerdict
from lifeguard.scores import reference_scores, time_per_output_token
from lifeguard.stats import percentile


@dataclass(frozen=True)
class _Seen:
    ts_s: float
    latency_ms: float
    ok: bool
    request_id: str
    label: str | None
    ttft_ms: float | None = None
    tokens_out: int | None = None
    output_text: str | None = None


@dataclass(frozen=True)
class Mean:
    """A mean of per-request values in [0, 1] (ratings, reference scores) with its standard
    error."""

    n: int
    mean: float
    se: float

    @classmethod
    def of(cls, values: list[float]) -> Mean | None:
        if not values:
            return None
        a = np.asarray(values, dtype=np.float64)
        se = float(a.std(ddof=1)) / np.sqrt(a.size) if a.size > 1 else 0.0
        return cls(int(a.size), float(a.mean()), se)


@dataclass(frozen=True)
class VersionStats:
    events: int
    errors: int
    p95_ms: float | None
    labelled: int  # joined class labels (a generator: requests with any feedback)
    correct: int  # predictions equal to their class label
    ttft_p95_ms: float | None = None  # None: the version reports no TTFT (not a generator)
    tpot_p95_ms: float | None = None
    rating: Mean | None = None
    reference_score: Mean | None = None
    generator: bool = False  # its events carry a TTFT or an output text

    @property
    def error_rate(self) -> float:
        return self.errors / self.events if self.events else 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled and not self.generator else None


def generator_timing(latency_ms: list[float], ttft_ms: list[float | None],
                     tokens_out: list[int | None]) -> tuple[float | None, float | None]:
    """(TTFT p95, time-per-output-token p95) of successful requests; None where none report."""
    ttft = np.asarray([np.nan if t is None else t for t in ttft_ms], dtype=np.float64)
    tokens = np.asarray([np.nan if t is None else t for t in tokens_out], dtype=np.float64)
    tpot = time_per_output_token(np.asarray(latency_ms, dtype=np.float64), ttft, tokens)
    return percentile(ttft[np.isfinite(ttft)], 95), percentile(tpot, 95)


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
        self._labels: collections.OrderedDict[str, FeedbackEvent] = collections.OrderedDict()
        self._max_labels = max_labels
        # request_id -> reference score: ROUGE-L is pure Python and a judge is polled every
        # second, so each (answer, reference) pair is scored once.
        self._scores: collections.OrderedDict[str, float] = collections.OrderedDict()

    def observe(self, event: InferenceEvent | FeedbackEvent) -> None:
        if event.model != self.model:
            return
        if isinstance(event, FeedbackEvent):
            self._labels[event.request_id] = event
            if len(self._labels) > self._max_labels:
                self._labels.popitem(last=False)
            return
        output = event.output
        label = output.label if output is not None else None
        self._events[event.model_version].append(_Seen(
            event.ts_s, event.latency_ms, event.status == "ok", event.request_id,
            None if label is None else str(label), event.ttft_ms, event.tokens_out,
            None if output is None else output.text))

    def stats(self, version: int, since_s: float) -> VersionStats:
        seen = [s for s in self._events.get(str(version), ()) if s.ts_s >= since_s]
        ok = [s for s in seen if s.ok]
        ttft, tpot = generator_timing([s.latency_ms for s in ok], [s.ttft_ms for s in ok],
                                      [s.tokens_out for s in ok])
        joined = [(s, self._labels[s.request_id]) for s in ok if s.request_id in self._labels]
        classified = [(s.label, str(f.label)) for s, f in joined if f.label is not None]
        ratings = [f.rating_value for _, f in joined if f.rating_value is not None]
        pairs = [(s.request_id, s.output_text, f.reference) for s, f in joined
                 if f.reference is not None and s.output_text is not None]
        scores = self._reference_scores(pairs)
        generator = ttft is not None or any(s.output_text is not None for s in ok)
        return VersionStats(
            events=len(seen), errors=len(seen) - len(ok),
            p95_ms=percentile([s.latency_ms for s in ok], 95),
            labelled=len(joined) if generator else len(classified),
            correct=sum(p == t for p, t in classified), ttft_p95_ms=ttft, tpot_p95_ms=tpot,
            rating=Mean.of(ratings), reference_score=Mean.of(scores), generator=generator)

    def _reference_scores(self, pairs: list[tuple[str, str, str]]) -> list[float]:
        """(request_id, answer, reference) -> scores, each pair scored once (cache bounded
        like the labels)."""
        cache = self._scores
        missing = [p for p in pairs if p[0] not in cache]
        if missing:
            new = reference_scores([o for _, o, _ in missing], [r for _, _, r in missing])
            for (rid, _, _), score in zip(missing, new, strict=True):
                cache[rid] = float(score)
            while len(cache) > self._max_labels:
                cache.popitem(last=False)
        return [cache[rid] for rid, _, _ in pairs if rid in cache]

    def __call__(self, query: CanaryQuery) -> CanaryVerdict:
        cfg = self.config
        canary = self.stats(query.canary_version, query.since_s)
        stable = (self.stats(query.stable_version, query.since_s)
                  if query.stable_version is not None else None)
        evidence = _evidence(canary, stable)

        def verdict(state: Any, reason: str) -> CanaryVerdict:
            return CanaryVerdict(state, reason, canary.events, evidence)

        # Breaches may be called early, on a quarter of the events a promotion needs.
        if canary.events >= max(10, cfg.min_events // 4):
            breach = (self._serving_breach(canary, stable) if not canary.generator
                      else self._generator_breach(canary, stable))
            if breach is not None:
                return verdict("unhealthy", breach)
        drops = [("accuracy", self._accuracy_drop(canary, stable), cfg.max_accuracy_drop),
                 ("rating", self._mean_drop(canary.rating,
                                            stable.rating if stable else None),
                  cfg.max_rating_drop),
                 ("reference_score", self._mean_drop(
                     canary.reference_score, stable.reference_score if stable else None),
                  cfg.max_reference_score_drop)]
        for name, drop, allowed in drops:
            if drop is None:
                continue
            evidence[f"{name}_drop"], evidence[f"{name}_drop_lower"] = drop
            if drop[1] > allowed:
                return verdict("unhealthy", f"{name.replace('_', ' ')} drop {drop[0]:.3f} "
                                            f"(lower bound {drop[1]:.3f}) > {allowed}")
        if canary.events < cfg.min_events:
            return verdict("insufficient", f"{canary.events}/{cfg.min_events} canary events")
        if canary.labelled < cfg.min_labelled:
            return verdict("insufficient", f"{canary.labelled}/{cfg.min_labelled} labels")
        if canary.generator:
            return verdict("healthy", "within error, TTFT, time-per-token and quality bounds")
        return verdict("healthy", "within error, latency and accuracy bounds")

    def _serving_breach(self, canary: VersionStats, stable: VersionStats | None) -> str | None:
        cfg = self.config
        if canary.error_rate > cfg.max_error_rate:
            return f"error rate {canary.error_rate:.3f} > {cfg.max_error_rate}"
        if canary.p95_ms is not None and canary.p95_ms > cfg.latency_slo_ms:
            return f"p95 {canary.p95_ms:.1f} ms > SLO {cfg.latency_slo_ms} ms"
        if (stable and stable.p95_ms and canary.p95_ms is not None and stable.events >= 10
                and canary.p95_ms > cfg.max_latency_ratio * stable.p95_ms):
            return (f"p95 {canary.p95_ms:.1f} ms > {cfg.max_latency_ratio} x stable "
                    f"{stable.p95_ms:.1f} ms")
        return None

    def _generator_breach(self, canary: VersionStats, stable: VersionStats | None,
                          ) -> str | None:
        """Errors, TTFT (against its SLO and the stable version) and time per output token.
        End-to-end latency is not judged: it grows with the answer's length."""
        cfg = self.config
        if canary.error_rate > cfg.max_error_rate:
            return f"error rate {canary.error_rate:.3f} > {cfg.max_error_rate}"
        ttft = canary.ttft_p95_ms
        if ttft is not None and cfg.ttft_slo_ms is not None and ttft > cfg.ttft_slo_ms:
            return f"TTFT p95 {ttft:.1f} ms > SLO {cfg.ttft_slo_ms} ms"
        if stable is None or stable.events < 10:
            return None
        for name, mine, theirs, ratio in (
                ("TTFT p95", ttft, stable.ttft_p95_ms, cfg.max_ttft_ratio),
                ("time per output token p95", canary.tpot_p95_ms, stable.tpot_p95_ms,
                 cfg.max_tpot_ratio)):
            if mine is not None and theirs and mine > ratio * theirs:
                return f"{name} {mine:.1f} ms > {ratio} x stable {theirs:.1f} ms"
        return None

    def _mean_drop(self, canary: Mean | None, stable: Mean | None,
                   ) -> tuple[float, float] | None:
        """(drop, one-sided lower confidence bound of the drop) of a mean in [0, 1]."""
        need = max(2, self.config.min_labelled)
        if canary is None or stable is None or canary.n < need or stable.n < need:
            return None
        drop = stable.mean - canary.mean
        return drop, drop - self.z * max(float(np.hypot(canary.se, stable.se)), 1e-9)

    def _accuracy_drop(self, canary: VersionStats,
                       stable: VersionStats | None) -> tuple[float, float] | None:
        """(drop, one-sided lower confidence bound of the drop), when both sides have labels."""
        need = max(1, self.config.min_labelled)
        if (stable is None or canary.accuracy is None or stable.accuracy is None
                or canary.labelled < need or stable.labelled < need):
            return None
        a_s, a_c = stable.accuracy, canary.accuracy
        se = math.sqrt(a_s * (1 - a_s) / stable.labelled + a_c * (1 - a_c) / canary.labelled)
        drop = a_s - a_c
        return drop, drop - self.z * max(se, 1e-9)


def _evidence(canary: VersionStats, stable: VersionStats | None,
              ) -> dict[str, float | int | str | None]:
    evidence: dict[str, float | int | str | None] = {
        "canary_events": canary.events, "canary_error_rate": canary.error_rate,
        "canary_p95_ms": canary.p95_ms, "canary_accuracy": canary.accuracy,
        "canary_labelled": canary.labelled,
        "stable_events": stable.events if stable else None,
        "stable_p95_ms": stable.p95_ms if stable else None,
        "stable_accuracy": stable.accuracy if stable else None,
        "stable_labelled": stable.labelled if stable else None,
    }
    if canary.generator:
        for side, stats in (("canary", canary), ("stable", stable)):
            evidence[f"{side}_ttft_p95_ms"] = stats.ttft_p95_ms if stats else None
            evidence[f"{side}_tpot_p95_ms"] = stats.tpot_p95_ms if stats else None
            for name in ("rating", "reference_score"):
                mean = getattr(stats, name) if stats else None
                evidence[f"{side}_{name}"] = mean.mean if mean else None
                evidence[f"{side}_{name}_n"] = mean.n if mean else 0
    return evidence


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
