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

    @classmethod
    def judge(
        cls,
        detector: str,
        metric: str,
        statistic: float,
        threshold: float,
        direction: str,
        n_reference: int,
        n_current: int,
        **labels: str | None,
    ) -> DetectorResult:
        """A decided result: BREACH when ``statistic`` is past ``threshold`` on ``direction``.

        The threshold itself does not breach (a p-value equal to alpha, a p95 equal to the SLO).
        A NaN statistic (e.g. a test on a constant column) is reported as is and never breaches.
        """
        if direction not in ("above", "below"):
            raise ValueError(f"direction must be 'above' or 'below', got {direction!r}")
        value = float(statistic)
        past = value > threshold if direction == "above" else value < threshold
        return cls(
            detector, metric, value, float(threshold), direction,
            Verdict.BREACH if past else Verdict.OK, n_reference, n_current, **labels,
        )

    @classmethod
    def insufficient(
        cls,
        detector: str,
        metric: str,
        threshold: float,
        direction: str,
        n_reference: int,
        n_current: int,
        **labels: str | None,
    ) -> DetectorResult:
        """Too few samples to decide: no statistic, never a breach."""
        return cls(
            detector, metric, None, float(threshold), direction,
            Verdict.INSUFFICIENT, n_reference, n_current, **labels,
        )
