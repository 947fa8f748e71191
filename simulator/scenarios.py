"""Scenarios: what traffic to send, when, and what its true labels are — a pure plan.

Request ``i`` is due ``i / rate`` seconds after the start, and everything about it (its text,
true label, phase, whether and when it gets a label, its synthetic latency) comes from
generators seeded by (seed, i): the same config plans the same traffic however fast it is sent.
"""

from __future__ import annotations

import math
import random
import secrets
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from lifeguard.config import StrictModel
from simulator.corpus import (
    BASE_DOMAIN,
    DOMAINS,
    SHIFT_DOMAIN,
    Review,
    default_concept_words,
    generate_review,
    reinterpret,
)

ScenarioKind = Literal[
    "stationary", "abrupt-shift", "gradual-shift", "latency-regression", "concept-drift"]
SCENARIOS: tuple[ScenarioKind, ...] = (
    "stationary", "abrupt-shift", "gradual-shift", "latency-regression", "concept-drift")
Phase = Literal["steady", "pre", "ramp", "post"]


class ScenarioConfig(StrictModel):
    """One scenario. Times are seconds from the start of the run; ``shift_at_s`` is T, the
    onset of whatever the scenario changes (unused by ``stationary``)."""

    kind: ScenarioKind = "stationary"
    rate: float = Field(default=20.0, gt=0, description="requests per second")
    duration_s: float = Field(default=60.0, gt=0)
    shift_at_s: float = Field(default=30.0, ge=0, description="T: when the change starts")
    ramp_s: float = Field(default=30.0, gt=0,
                          description="gradual-shift: seconds from 0 to 100% mix")
    base_domain: str = BASE_DOMAIN
    shift_domain: str = SHIFT_DOMAIN
    noise: float = Field(default=0.05, ge=0, lt=0.5,
                         description="share of labels flipped by noise")
    label_delay_s: float = Field(default=5.0, ge=0,
                                 description="fixed delay before a label arrives")
    label_jitter_s: float = Field(default=1.0, ge=0,
                                  description="plus uniform [0, jitter) on top")
    label_coverage: float = Field(default=0.8, ge=0, le=1,
                                  description="share of requests ever labelled")
    latency_ms: float = Field(default=40.0, gt=0,
                              description="direct mode: median synthetic latency")
    latency_factor: float = Field(default=3.0, gt=0,
                                  description="latency-regression: multiplier")
    concept_words: tuple[str, ...] | None = Field(
        default=None, description="concept-drift: cue words whose meaning flips "
                                  "(default: three of each polarity)")
    model: str = Field(default="sentiment", min_length=1)
    seed: int = 0
    run_tag: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_.-]{1,40}$",
        description="request id prefix; default random per run, so reruns never share ids")

    @model_validator(mode="after")
    def _consistent(self) -> ScenarioConfig:
        for key in ("base_domain", "shift_domain"):
            if getattr(self, key) not in DOMAINS:
                raise ValueError(f"{key} must be one of {tuple(DOMAINS)}, "
                                 f"got {getattr(self, key)!r}")
        if self.kind in ("abrupt-shift", "gradual-shift") and (
                self.base_domain == self.shift_domain):
            raise ValueError("shift_domain must differ from base_domain for a domain shift")
        if self.kind != "stationary" and self.shift_at_s >= self.duration_s:
            raise ValueError(f"shift_at_s ({self.shift_at_s}) must be before the end "
                             f"(duration_s {self.duration_s}) for {self.kind}")
        if self.concept_words is not None:
            known = {w for d in DOMAINS.values() for label in ("negative", "positive")
                     for w in d.cue_words(label)}
            unknown = sorted(set(self.concept_words) - known)
            if unknown or not self.concept_words:
                raise ValueError(f"concept_words must be non-empty cue words; unknown: {unknown}")
        if self.rate * self.duration_s < 1:
            raise ValueError("rate * duration_s plans no request at all")
        return self


@dataclass(frozen=True)
class PlannedRequest:
    """One request of the plan. ``truth`` is the label the simulator believes (and sends as
    feedback); ``model_label`` is what the base domain's concept says, which a synthetic model
    answers with (in concept drift the two differ for reinterpreted cues)."""

    index: int
    offset_s: float
    request_id: str
    phase: Phase
    review: Review
    truth: str
    model_label: str
    labelled: bool
    label_delay_s: float
    latency_ms: float

    @property
    def text(self) -> str:
        return self.review.text


class Scenario:
    """The plan of one run: ``plan(i)`` for every ``i`` below ``n_requests``."""

    def __init__(self, config: ScenarioConfig) -> None:
        self.config = config
        self.run_tag = config.run_tag or secrets.token_hex(4)
        self.n_requests = max(1, math.floor(config.rate * config.duration_s))
        words = config.concept_words or default_concept_words(config.base_domain)
        self._concept_words = frozenset(words)

    @property
    def shift_end_s(self) -> float:
        """When the change is complete (T for all but a gradual shift)."""
        extra = self.config.ramp_s if self.config.kind == "gradual-shift" else 0.0
        return self.config.shift_at_s + extra

    def offset(self, index: int) -> float:
        return index / self.config.rate

    def phase(self, offset_s: float) -> Phase:
        if self.config.kind == "stationary":
            return "steady"
        if offset_s < self.config.shift_at_s:
            return "pre"
        return "ramp" if offset_s < self.shift_end_s else "post"

    def shift_share(self, offset_s: float) -> float:
        """Share of traffic from the shifted domain at ``offset_s`` (domain shifts only)."""
        kind, start = self.config.kind, self.config.shift_at_s
        if kind == "abrupt-shift":
            return 1.0 if offset_s >= start else 0.0
        if kind == "gradual-shift":
            return min(1.0, max(0.0, (offset_s - start) / self.config.ramp_s))
        return 0.0

    def request_id(self, index: int) -> str:
        return f"{self.run_tag}-{index:08d}"

    def plan(self, index: int) -> PlannedRequest:
        if not 0 <= index < self.n_requests:
            raise IndexError(f"request {index} is outside the plan (0..{self.n_requests - 1})")
        cfg = self.config
        offset = self.offset(index)
        # Independent streams, so that changing the coverage never changes the texts.
        text_rng = random.Random(f"{cfg.seed}:{index}:text")
        label_rng = random.Random(f"{cfg.seed}:{index}:label")
        shifted_domain = text_rng.random() < self.shift_share(offset)
        domain = cfg.shift_domain if shifted_domain else cfg.base_domain
        review = generate_review(text_rng, domain, cfg.noise)
        truth = review.label
        if cfg.kind == "concept-drift" and offset >= cfg.shift_at_s:
            truth = reinterpret(review, self._concept_words).label
        latency = cfg.latency_ms * text_rng.lognormvariate(0.0, 0.25)
        if cfg.kind == "latency-regression" and offset >= cfg.shift_at_s:
            latency *= cfg.latency_factor
        return PlannedRequest(
            index=index, offset_s=offset, request_id=self.request_id(index),
            phase=self.phase(offset), review=review, truth=truth, model_label=review.label,
            labelled=label_rng.random() < cfg.label_coverage,
            label_delay_s=cfg.label_delay_s + label_rng.random() * cfg.label_jitter_s,
            latency_ms=round(latency, 3))
