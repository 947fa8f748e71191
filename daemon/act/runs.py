"""Action runs as data: the run's states, the run record, its step records and transitions,
and audit entries. Shared by the store, the policy, the runner and the control API."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class RunState(StrEnum):
    """pending_approval → queued → running (step i of n) → succeeded | failed | rolled_back.

    ``rejected`` ends a pending run; ``dry_run`` is a run that was recorded and never executed.
    """

    PENDING_APPROVAL = "pending_approval"
    QUEUED = "queued"  # approved (or auto): waits for a free runner slot
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    REJECTED = "rejected"
    DRY_RUN = "dry_run"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset(
    {RunState.SUCCEEDED, RunState.FAILED, RunState.ROLLED_BACK, RunState.REJECTED,
     RunState.DRY_RUN}
)
ACTIVE = frozenset({RunState.PENDING_APPROVAL, RunState.QUEUED, RunState.RUNNING})


def run_id_for(model: str, pipeline: str, trigger_ids: Iterable[str]) -> str:
    """Deterministic id: the same trigger (evaluation ids, or alert fingerprint + startsAt)
    always gives the same run id, so a replay can never start a second run."""
    raw = "\x1f".join([model, pipeline, *sorted(trigger_ids)])
    return "run-" + hashlib.sha256(raw.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class ActionRun:
    id: str
    model: str
    pipeline: str
    source: str  # "evaluation" | "alert" | "manual"
    mode: str  # the policy mode when the run was created
    state: RunState
    steps: tuple[dict[str, Any], ...]  # the pipeline's steps, frozen at trigger time
    evidence: dict[str, Any] = field(default_factory=dict)
    next_step: int = 0  # completed steps; the index of the next step to run
    snapshot_path: str | None = None
    champion_path: str | None = None
    error: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0

    def __post_init__(self) -> None:
        if not self.id or not self.model or not self.pipeline:
            raise ValueError("a run needs an id, a model and a pipeline")
        if not 0 <= self.next_step <= len(self.steps):
            raise ValueError(f"next_step {self.next_step} out of range 0..{len(self.steps)}")

    @property
    def n_steps(self) -> int:
        return len(self.steps)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["state"] = self.state.value
        out["steps"] = list(self.steps)
        out["n_steps"] = self.n_steps
        return out


@dataclass(frozen=True, slots=True)
class StepRecord:
    """A finished step: what it produced. ``artifacts`` maps name → {path, sha256}."""

    index: int
    name: str
    status: str
    artifacts: dict[str, dict[str, str]] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    attempts: int = 1
    finished_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Transition:
    ts: float
    from_state: RunState | None
    to_state: RunState
    step: int | None
    actor: str
    evidence: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["from_state"] = self.from_state.value if self.from_state else None
        out["to_state"] = self.to_state.value
        return out


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    ts: float
    actor: str
    action: str
    model: str | None
    run_id: str | None
    evidence: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
