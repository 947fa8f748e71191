"""An evaluation: one pass of a model's detectors over (reference, current) windows."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from detectors.result import DetectorResult, Verdict


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What the evaluator produced for one model version at one moment.

    ``window_end_offset`` ties the evaluation to the data it saw (partition offset of the last
    event in the window), so that an evaluation replayed from the same data gets the same id
    and never fires an action twice.
    """

    model: str
    model_version: str
    ts: float  # epoch seconds of the newest event in the current window
    results: tuple[DetectorResult, ...]
    window_end_offset: int = -1
    id: str = field(default="")

    def __post_init__(self) -> None:
        if not self.id:
            raw = f"{self.model}|{self.model_version}|{self.window_end_offset}|{self.ts:.3f}"
            object.__setattr__(self, "id", "ev-" + hashlib.sha256(raw.encode()).hexdigest()[:16])

    @property
    def breaches(self) -> tuple[DetectorResult, ...]:
        return tuple(r for r in self.results if r.verdict is Verdict.BREACH)

    @property
    def breached(self) -> bool:
        return any(r.verdict is Verdict.BREACH for r in self.results)
