"""The one result type every detector returns: the statistic, its threshold and the verdict."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Verdict(StrEnum):
    OK = "ok"
    BREACH = "breach"
    # Too few samples (e.g. labels) to decide: never counts as a breach.
    INSUFFICIENT = "insufficient_data"


@dataclass(frozen=True, slots=True)
class DetectorResult:
    """One statistic of one detector on one (reference, current) pair.

    ``statistic`` is None only when ``verdict`` is INSUFFICIENT. ``direction`` says which side
    of the threshold breaches: "above" (latency, drift distance) or "below" (accuracy, p-value).
    """

    detector: str  # e.g. "latency", "accuracy", "drift"
    metric: str  # e.g. "p95_ms", "accuracy", "text_length"
    statistic: float | None
    threshold: float
    direction: str  # "above" | "below"
    verdict: Verdict
    n_reference: int
    n_current: int
    method: str | None = None  # the statistical test, for drift
    column: str | None = None
    segment: str | None = None

    @property
    def breached(self) -> bool:
        return self.verdict is Verdict.BREACH

    @property
    def key(self) -> str:
        """Stable name used by policies: ``detector.metric[column][segment]``."""
        parts = [f"{self.detector}.{self.metric}"]
        if self.column:
            parts.append(f"[{self.column}]")
        if self.segment:
            parts.append(f"{{{self.segment}}}")
        return "".join(parts)
