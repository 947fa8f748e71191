"""Latency against SLOs: p50/p95/p99 of the current window, and the share of errors."""

from __future__ import annotations

import numpy as np

from detectors.result import DetectorResult
from lifeguard.stats import percentile


class LatencyDetector:
    """p50/p95/p99 (ms) against their SLOs and the error rate against a ceiling.

    Each configured statistic is its own result; with fewer than ``min_samples`` events in
    the current window every result is INSUFFICIENT. Latency is judged on the current window
    alone (an SLO is absolute), so ``n_reference`` is 0. Percentiles include failed requests:
    a timeout is the slowest answer, not a missing one.
    """

    name = "latency"

    def __init__(
        self,
        p50_ms: float | None = None,
        p95_ms: float | None = 1000.0,
        p99_ms: float | None = None,
        error_rate_max: float | None = 0.05,
        min_samples: int = 100,
    ) -> None:
        self.slos = {q: slo for q, slo in ((50, p50_ms), (95, p95_ms), (99, p99_ms))
                     if slo is not None}
        for q, slo in self.slos.items():
            if not slo > 0:
                raise ValueError(f"p{q}_ms must be > 0, got {slo}")
        if error_rate_max is not None and not 0 <= error_rate_max <= 1:
            raise ValueError(f"error_rate_max must be in [0, 1], got {error_rate_max}")
        if min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {min_samples}")
        if not self.slos and error_rate_max is None:
            raise ValueError("nothing to check: set a percentile SLO or error_rate_max")
        self.error_rate_max = error_rate_max
        self.min_samples = min_samples

    def evaluate(
        self, latency_ms: np.ndarray, is_error: np.ndarray | None = None
    ) -> tuple[DetectorResult, ...]:
        latency = np.asarray(latency_ms, dtype=np.float64)
        latency = latency[np.isfinite(latency)]
        n = int(latency.size)
        results: list[DetectorResult] = []
        enough = n >= self.min_samples
        if self.slos:
            qs = list(self.slos)
            values = [percentile(latency, q) for q in qs] if enough else [None] * len(qs)
            for q, value in zip(qs, values, strict=True):
                metric = f"p{q}_ms"
                if value is None:
                    results.append(DetectorResult.insufficient(
                        self.name, metric, self.slos[q], "above", 0, n))
                else:
                    results.append(DetectorResult.judge(
                        self.name, metric, value, self.slos[q], "above", 0, n))
        if self.error_rate_max is not None:
            errors = np.zeros(0, dtype=bool) if is_error is None else np.asarray(is_error, bool)
            m = int(errors.size)
            if m < self.min_samples:
                results.append(DetectorResult.insufficient(
                    self.name, "error_rate", self.error_rate_max, "above", 0, m))
            else:
                results.append(DetectorResult.judge(
                    self.name, "error_rate", float(errors.mean()), self.error_rate_max,
                    "above", 0, m))
        return tuple(results)
