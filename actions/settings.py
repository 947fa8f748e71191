"""The settings steps decide and train by: ActionPolicy (data split, gate rule, optimization
guards) and TrainConfig (how fine_tune and prune's recovery train). Both are params of a step."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lifeguard.config import StrictModel

Device = Literal["auto", "cpu", "cuda"]


class TrainConfig(StrictModel):
    """How fine_tune (and prune's recovery) train. Seeded: same inputs, same weights."""

    # auto: LoRA (merged before saving) for a causal LM, all weights for a classifier
    method: Literal["auto", "full", "lora"] = "auto"
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


class ActionPolicy(StrictModel):
    """The thresholds steps decide by: data split, gate rule, optimization guards."""

    holdout_fraction: float = Field(default=0.2, gt=0, lt=1)  # of the snapshot, never trained on
    # share of training rows drawn from the reference data
    replay_fraction: float = Field(default=0.0, ge=0, lt=1)
    min_train_rows: int = Field(default=8, ge=1)
    min_holdout_rows: int = Field(default=8, ge=1)
    gate_margin: float = Field(default=0.0, ge=-1, le=1)  # candidate acc >= champion acc + margin
    gate_floor: float = Field(default=0.0, ge=0, le=1)  # and candidate acc >= floor
    # generators: candidate perplexity <= champion's * (1 + margin) (not worse beyond it) ...
    perplexity_margin: float = Field(default=0.0, ge=0, lt=1)
    perplexity_ceiling: float | None = Field(default=None, gt=1)  # ... and <= this floor
    # ... and ROUGE-L F1 of greedy answers vs references >= champion's - margin and >= floor
    score_margin: float = Field(default=0.0, ge=0, le=1)
    score_floor: float = Field(default=0.0, ge=0, le=1)
    gate_new_tokens: int = Field(default=32, ge=1, le=512)  # answer length the gate generates
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
