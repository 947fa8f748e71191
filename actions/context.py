"""What a step is given and what it gives back: StepContext (paths, device, policy, training
settings, progress sinks) and StepResult; both travel to a worker process as JSON."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from actions.progress import ActionMetrics, Progress

Device = Literal["auto", "cpu", "cuda"]


class TrainConfig(BaseModel):
    """How fine_tune (and prune's recovery) train. Seeded: same inputs, same weights."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["full", "lora"] = "full"
    epochs: int = Field(default=1, ge=1)
    max_steps: int | None = Field(default=None, ge=1)  # caps epochs when set
    batch_size: int = Field(default=16, ge=1)
    learning_rate: float = Field(default=5e-5, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_ratio: float = Field(default=0.06, ge=0, lt=1)
    # tokens per example; also the exported model's limit
    max_length: int = Field(default=128, ge=2)
    lora_r: int = Field(default=8, ge=1)
    lora_alpha: int = Field(default=16, ge=1)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    checkpoint_every: int = Field(default=50, ge=1)  # steps between resumable checkpoints
    seed: int = 0


class ActionPolicy(BaseModel):
    """The thresholds steps decide by: data split, gate rule, optimization guards."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    holdout_fraction: float = Field(default=0.2, gt=0, lt=1)  # of the snapshot, never trained on
    # share of training rows drawn from the reference data
    replay_fraction: float = Field(default=0.0, ge=0, lt=1)
    min_train_rows: int = Field(default=8, ge=1)
    min_holdout_rows: int = Field(default=8, ge=1)
    gate_margin: float = Field(default=0.0, ge=-1, le=1)  # candidate acc >= champion acc + margin
    gate_floor: float = Field(default=0.0, ge=0, le=1)  # and candidate acc >= floor
    # generators: candidate perplexity <= champion's * (1 - margin)
    perplexity_margin: float = Field(default=0.0, ge=0, lt=1)
    perplexity_ceiling: float | None = Field(default=None, gt=1)
    max_quantize_drop: float = Field(default=0.005, ge=0, le=1)  # accuracy (fraction) int8 may lose
    # generators: relative rise of mean NLL int8 may cost
    max_quantize_nll_increase: float = Field(default=0.02, ge=0)
    quantize_embeddings: bool = True
    parity_atol: float = Field(default=1e-3, gt=0)
    prune_fraction: float = Field(default=0.34, gt=0, lt=1)  # share of layers removed
    prune_recovery_steps: int = Field(default=40, ge=0)
    max_prune_drop: float = Field(default=0.01, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> ActionPolicy:
        if self.gate_floor > 0 and self.gate_margin < -self.gate_floor:
            raise ValueError("gate_margin below -gate_floor makes the floor meaningless")
        return self


@dataclass(frozen=True)
class StepContext:
    """Everything one step needs. ``model_dir`` is the step's input model; a pipeline moves it
    forward with ``with_model(result.model_dir)``. Outputs go under ``output_dir`` in
    content-addressed folders, so two runs on the same inputs share (and skip) the work.
    ``device`` and ``threads`` say how to run, not what to compute: they are not part of the
    content key."""

    run_id: str
    model_dir: Path
    output_dir: Path
    snapshot: Path | None = None  # labelled traffic (JSONL, see actions.snapshot)
    reference: Path | None = None  # reference/training data for replay (same format)
    champion_dir: Path | None = None  # the model in production, for the gate
    device: Device = "auto"
    threads: int | None = None
    policy: ActionPolicy = field(default_factory=ActionPolicy)
    train: TrainConfig = field(default_factory=TrainConfig)
    progress: Callable[[Progress], None] | None = field(default=None, compare=False)
    metrics: ActionMetrics | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.run_id:
            raise ValueError("run_id must not be empty")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        for name in ("model_dir", "output_dir", "snapshot", "reference", "champion_dir"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))

    def with_model(self, model_dir: Path) -> StepContext:
        return dataclasses.replace(self, model_dir=Path(model_dir))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for a worker process (progress sinks stay behind)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("progress", "metrics"):
                continue
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, BaseModel):
                value = value.model_dump()
            out[f.name] = value
        return out

    @classmethod
    def from_dict(
        cls,
        raw: dict[str, Any],
        progress: Callable[[Progress], None] | None = None,
        metrics: ActionMetrics | None = None,
    ) -> StepContext:
        known = {f.name for f in dataclasses.fields(cls)} - {"progress", "metrics"}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown StepContext fields: {sorted(unknown)}")
        kwargs = dict(raw)
        kwargs["policy"] = ActionPolicy(**raw.get("policy", {}))
        kwargs["train"] = TrainConfig(**raw.get("train", {}))
        return cls(**kwargs, progress=progress, metrics=metrics)


@dataclass(frozen=True)
class StepResult:
    """What a step produced. ``model_dir`` is the model the next step takes (the new artifact,
    or for the gate the candidate it let through); ``metrics`` are JSON scalars for the run's
    evidence; ``cached`` says the work was already done by an earlier run on the same inputs."""

    step: str
    run_id: str
    key: str
    artifact_dir: Path
    model_dir: Path
    cached: bool
    metrics: dict[str, Any]
    files: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        raw = dataclasses.asdict(self)
        raw["artifact_dir"] = str(self.artifact_dir)
        raw["model_dir"] = str(self.model_dir)
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> StepResult:
        return cls(**{**raw, "artifact_dir": Path(raw["artifact_dir"]),
                      "model_dir": Path(raw["model_dir"])})
