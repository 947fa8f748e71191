"""Configuration of the serving fleet and of rollouts: which replicas, which repository, how to
roll out and when a canary is judged. Misspelled keys fail at start-up (extra="forbid")."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from lifeguard.config import StrictModel


class CanaryConfig(StrictModel):
    """How many replicas take the canary and what the judge needs before it may promote."""

    replicas: int = Field(default=1, ge=1,
                          description="k: replicas that serve the canary first")
    min_events: int = Field(default=200, ge=1,
                            description="canary events the judge must have seen")
    max_error_rate: float = Field(default=0.01, ge=0, le=1,
                                  description="errors per request, at most")
    latency_slo_ms: float = Field(default=250.0, gt=0,
                                  description="canary p95 latency, at most (a generator, which "
                                              "reports TTFT, is judged on TTFT and TPOT instead)")
    max_latency_ratio: float = Field(default=2.0, gt=1,
                                     description="canary p95 / stable p95, at most")
    max_accuracy_drop: float = Field(default=0.05, ge=0, le=1,
                                     description="stable accuracy minus canary accuracy, at most")
    min_labelled: int = Field(default=50, ge=0,
                              description="joined labels (a generator: ratings or references) "
                                          "needed to judge quality")
    ttft_slo_ms: float | None = Field(default=None, gt=0,
                                      description="a generator canary's TTFT p95, at most")
    max_ttft_ratio: float = Field(default=2.0, gt=1,
                                  description="canary TTFT p95 / stable TTFT p95, at most")
    max_tpot_ratio: float = Field(default=2.0, gt=1,
                                  description="canary / stable p95 time per output token, at most")
    max_rating_drop: float = Field(default=0.1, ge=0, le=1,
                                   description="stable mean rating minus canary's, at most")
    max_reference_score_drop: float = Field(
        default=0.05, ge=0, le=1,
        description="stable mean reference score (ROUGE-L F1) minus canary's, at most")
    poll_interval_s: float = Field(default=1.0, gt=0,
                                   description="seconds between two verdicts")
    timeout_s: float = Field(default=600.0, gt=0,
                             description="no conclusive verdict by then: roll back")


class RolloutConfig(StrictModel):
    strategy: Literal["rolling", "canary"] = "canary"
    canary: CanaryConfig = CanaryConfig()
    request_timeout_s: float = Field(default=10.0, gt=0,
                                     description="one HTTP call to a replica")
    load_timeout_s: float = Field(default=120.0, gt=0,
                                  description="a replica loading a version")
    replica_timeout_s: float = Field(default=30.0, gt=0,
                                     description="an unreachable replica is skipped after this")
    smoke_text: str = Field(default="lifeguard smoke test", min_length=1,
                            description="input of the inference run after each load")


class FleetConfig(StrictModel):
    """The replicas (Open Inference Protocol v2 base URLs), the repository they load from."""

    replicas: list[str] = Field(min_length=1)
    repository: Path
    rollout: RolloutConfig = RolloutConfig()

    @field_validator("replicas")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        cleaned = [u.rstrip("/") for u in urls]
        for url in cleaned:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"replica URL {url!r} must start with http:// or https://")
        if len(set(cleaned)) != len(cleaned):
            raise ValueError("replica URLs must be distinct")
        return cleaned

    @model_validator(mode="after")
    def _canary_fits(self) -> FleetConfig:
        k = self.rollout.canary.replicas
        if self.rollout.strategy == "canary" and k >= len(self.replicas) and len(self.replicas) > 1:
            raise ValueError(f"canary.replicas={k} must be fewer than the {len(self.replicas)} "
                             "replicas, or nothing stays on the stable version")
        return self
