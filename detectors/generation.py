"""A generator's serving health: TTFT p95 and time per output token p95 against SLOs, and the
truncation (finish_reason=length) and empty-output rates against ceilings."""

from __future__ import annotations

import numpy as np

from detectors.result import DetectorResult
from lifeguard.scores import time_per_output_token
from lifeguard.stats import percentile


class GenerationDetector:
    """Four statistics of the current window, each its own result; an SLO or ceiling set to
    None is not checked. Like latency, they are absolute (``n_reference`` is 0).

    Each statistic counts only the rows that report what it needs: TTFT the rows with a
    ``ttft_ms``, TPOT the rows with a TTFT and two or more output tokens, truncation the rows
    with a ``finish_reason``, empty outputs the successful rows with an output text (a
    replica that logs no text is not a replica that answers nothing). Below ``min_samples``
    such rows the result is INSUFFICIENT.
    """

    name = "generation"

    def __init__(
        self,
        ttft_p95_ms: float | None = 1000.0,
        tpot_p95_ms: float | None = 200.0,
        truncation_rate_max: float | None = 0.10,
        empty_output_rate_max: float | None = 0.02,
        min_samples: int = 100,
    ) -> None:
        for label, slo in (("ttft_p95_ms", ttft_p95_ms), ("tpot_p95_ms", tpot_p95_ms)):
            if slo is not None and not slo > 0:
                raise ValueError(f"{label} must be > 0, got {slo}")
        for label, ceiling in (("truncation_rate_max", truncation_rate_max),
                               ("empty_output_rate_max", empty_output_rate_max)):
            if ceiling is not None and not 0 <= ceiling <= 1:
                raise ValueError(f"{label} must be in [0, 1], got {ceiling}")
        if min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {min_samples}")
        if (ttft_p95_ms, tpot_p95_ms, truncation_rate_max, empty_output_rate_max) == (
                None, None, None, None):
            raise ValueError("nothing to check: set an SLO or a ceiling")
        self.ttft_p95_ms, self.tpot_p95_ms = ttft_p95_ms, tpot_p95_ms
        self.truncation_rate_max = truncation_rate_max
        self.empty_output_rate_max = empty_output_rate_max
        self.min_samples = min_samples

    def evaluate(self, latency_ms: np.ndarray, ttft_ms: np.ndarray, tokens_out: np.ndarray,
                 finish_reason: np.ndarray, output_text: np.ndarray,
                 is_error: np.ndarray | None = None) -> tuple[DetectorResult, ...]:
        """Arrays are aligned, one value per inference (NaN/None where not reported)."""
        ttft = np.asarray(ttft_ms, dtype=np.float64)
        ok = (np.ones(ttft.size, dtype=bool) if is_error is None
              else ~np.asarray(is_error, dtype=bool))
        results: list[DetectorResult] = []
        if self.ttft_p95_ms is not None:
            results.append(self._p95("ttft_p95_ms", ttft[np.isfinite(ttft)], self.ttft_p95_ms))
        if self.tpot_p95_ms is not None:
            tpot = time_per_output_token(latency_ms, ttft, tokens_out)
            results.append(self._p95("tpot_p95_ms", tpot, self.tpot_p95_ms))
        if self.truncation_rate_max is not None:
            reasons = [r for r in np.asarray(finish_reason, dtype=object) if isinstance(r, str)]
            results.append(self._rate("truncation_rate", [r == "length" for r in reasons],
                                      self.truncation_rate_max))
        if self.empty_output_rate_max is not None:
            texts = np.asarray(output_text, dtype=object)[ok]
            results.append(self._rate("empty_output_rate",
                                      [not t.strip() for t in texts if isinstance(t, str)],
                                      self.empty_output_rate_max))
        return tuple(results)

    def _p95(self, metric: str, values: np.ndarray, slo: float) -> DetectorResult:
        n = int(values.size)
        value = percentile(values, 95) if n >= self.min_samples else None
        if value is None:
            return DetectorResult.insufficient(self.name, metric, slo, "above", 0, n)
        return DetectorResult.judge(self.name, metric, value, slo, "above", 0, n)

    def _rate(self, metric: str, hits: list[bool], ceiling: float) -> DetectorResult:
        n = len(hits)
        if n < self.min_samples:
            return DetectorResult.insufficient(self.name, metric, ceiling, "above", 0, n)
        return DetectorResult.judge(self.name, metric, sum(hits) / n, ceiling, "above", 0, n)
