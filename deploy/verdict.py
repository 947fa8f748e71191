"""The canary judgement contract: the daemon hands the rollout a ``Judge`` that answers, for a
canary version, healthy / unhealthy / not enough data yet, with the evidence it used."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

VerdictState = Literal["healthy", "unhealthy", "insufficient"]
VERDICT_STATES: tuple[VerdictState, ...] = ("healthy", "unhealthy", "insufficient")


@dataclass(frozen=True)
class CanaryQuery:
    """Which version to judge, against which stable version, counting traffic since when."""

    model: str
    canary_version: int
    stable_version: int | None
    since_s: float  # epoch seconds: the canary's evidence starts when it began serving

    def __post_init__(self) -> None:
        if self.canary_version < 1:
            raise ValueError("canary_version must be a positive version number")


@dataclass(frozen=True)
class CanaryVerdict:
    state: VerdictState
    reason: str
    events: int  # canary events behind the verdict; the rollout checks it against min_events
    evidence: Mapping[str, float | int | str | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.state not in VERDICT_STATES:
            raise ValueError(f"state must be one of {VERDICT_STATES}, got {self.state!r}")
        if self.events < 0:
            raise ValueError("events must be non-negative")

    def as_dict(self) -> dict[str, object]:
        return {"verdict": self.state, "reason": self.reason, "events": self.events,
                "evidence": dict(self.evidence)}


Judge = Callable[[CanaryQuery], CanaryVerdict]
