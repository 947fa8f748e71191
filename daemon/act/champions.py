"""Which training checkpoint is in production for a model: the champion a retrain starts from
and the gate compares against."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from daemon.act.runs import RunState
from daemon.act.store import StateStore


class Champions:
    """Which training checkpoint is in production: the fine-tuned candidate of the newest run
    that succeeded (its rollout promoted), else the configured base model."""

    def __init__(self, store: StateStore, base_models: Mapping[str, Path | None]) -> None:
        self.store = store
        self.base = dict(base_models)

    def __call__(self, model: str) -> Path | None:
        for run in self.store.list_runs(model=model, states=[RunState.SUCCEEDED], limit=20):
            for step in self.store.steps(run.id):
                if step.name == "fine_tune" and "model" in step.artifacts:
                    return Path(step.artifacts["model"]["path"])
        return self.base.get(model)
