"""The one contract between the runner and a pipeline step: ``fn(ctx: StepContext) ->
StepResult``, failing with the tree in ``actions.errors``; and the spec file that is a worker's
only input.

Built-in steps and ``uses: module:function`` steps share it. A step must be idempotent: the
runner calls it again after a crash when its completion was not recorded yet. Pure pydantic and
dataclasses, so the daemon imports it without importing torch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_serializer

from actions.errors import BadInput
from actions.progress import Progress
from actions.settings import ActionPolicy, Device, TrainConfig
from deploy.config import FleetConfig
from deploy.integrity import digest_dir
from lifeguard.config import StrictModel
from lifeguard.files import sha256_file
from lifeguard.state.fencing import Fence

SPEC_VERSION: Literal[1] = 1  # bumped when a field changes meaning: an old worker refuses it

ProgressSink = Callable[[Progress], None]


class DeployTarget(StrictModel):
    """Where the deploy step ships: the fleet, the rollout store, and the daemon's API whose
    canary analysis judges a canary. The token travels in the spec file (written 0600), and
    so does the run's fence (set per run by the runner)."""

    fleet: FleetConfig
    state_path: Path  # the state file that holds rollouts
    state_url: str | None = None  # a shared store (postgresql://...) instead of the file
    fence: Fence | None = None  # the run's lease: the rollout writes nothing once it is stale
    api_url: str | None = None
    token: SecretStr | None = None  # masked in reprs and logs, written out only to the spec

    @field_serializer("token", when_used="json")
    def _reveal(self, token: SecretStr | None) -> str | None:
        return None if token is None else token.get_secret_value()


class WorkerSettings(StrictModel):
    """What the daemon gives every step, whatever the run: how to run, where outputs go."""

    output_dir: Path | None = None  # content-addressed outputs; None: <run work dir>/cache
    device: Device = "auto"
    threads: int | None = Field(default=None, ge=1)
    deploy: DeployTarget | None = None  # None: the daemon has no `fleet:`, nothing deploys


class StepContext(StrictModel):
    """Everything one step may use; nothing else (no daemon objects, no store).

    ``model_dir`` is the step's input model (the run's ``model`` artifact so far, else the
    champion); a pipeline moves it forward with ``with_model``. Built-in steps write under
    ``output_dir`` in content-addressed folders, so two runs on the same inputs share (and
    skip) the work; ``device`` and ``threads`` say how to run, not what to compute. The
    run fields (``model`` .. ``params``) are set by the runner and keep their defaults by hand.
    """

    run_id: str = Field(min_length=1)
    output_dir: Path
    model_dir: Path | None = None
    snapshot: Path | None = None  # labelled traffic captured at trigger time (actions.snapshot)
    reference: Path | None = None  # reference/training data for replay (same format)
    champion_dir: Path | None = None  # the model serving when the run was triggered
    device: Device = "auto"
    threads: int | None = Field(default=None, ge=1)
    policy: ActionPolicy = Field(default_factory=ActionPolicy)
    train: TrainConfig = Field(default_factory=TrainConfig)
    model: str = ""  # the model's name in the daemon's config
    step: str = ""
    step_index: int = Field(default=0, ge=0)
    attempt: int = Field(default=1, ge=1)
    work_dir: Path | None = None  # per run, shared by its steps, kept for forensics
    artifacts: dict[str, Path] = Field(default_factory=dict)  # earlier steps' outputs by name
    params: dict[str, Any] = Field(default_factory=dict)  # as configured; custom steps read these
    deploy: DeployTarget | None = None
    progress: ProgressSink | None = Field(default=None, exclude=True)

    @classmethod
    def for_step(
        cls, *, run_id: str, model: str, step: str, step_index: int, attempt: int,
        work_dir: Path, params: Mapping[str, Any], artifacts: Mapping[str, Path],
        snapshot: Path | None, champion_dir: Path | None, settings: WorkerSettings,
    ) -> StepContext:
        """The context the runner hands a step: params that name a policy, training or
        context field set it; every param stays in ``params`` too. Raises BadInput."""
        policy, train, context, _ = split_params(params)
        try:
            return cls(
                run_id=run_id, model=model, step=step, step_index=step_index, attempt=attempt,
                work_dir=work_dir, params=dict(params), artifacts=dict(artifacts),
                model_dir=artifacts.get("model") or champion_dir, snapshot=snapshot,
                champion_dir=champion_dir, reference=context.get("reference"),
                output_dir=settings.output_dir or work_dir / "cache",
                device=context.get("device") or settings.device,
                threads=context.get("threads") or settings.threads,
                policy=ActionPolicy(**policy), train=TrainConfig(**train),
                deploy=settings.deploy)
        except ValidationError as exc:
            raise BadInput(f"step {step}: {exc}") from None

    def input_model(self) -> Path:
        """The model to work on; BadInput when the run has none yet."""
        if self.model_dir is None:
            raise BadInput(f"step {self.step or '?'}: no model to work on: neither an earlier "
                           "step's model nor a champion")
        return self.model_dir

    @property
    def step_dir(self) -> Path:
        """A folder only this step writes to, stable across retries (so re-runs overwrite)."""
        root = self.work_dir or self.output_dir / "runs" / self.run_id
        return root / f"{self.step_index:02d}-{self.step or 'step'}"

    def with_model(self, model_dir: Path) -> StepContext:
        return self.model_copy(update={"model_dir": Path(model_dir)})

    def replace(self, **changes: Any) -> StepContext:
        """A copy with ``changes``, validated like a new context."""
        return type(self).model_validate({**dict(self), **changes})


_POLICY_FIELDS = frozenset(ActionPolicy.model_fields)
_TRAIN_FIELDS = frozenset(TrainConfig.model_fields)
_CONTEXT_FIELDS = frozenset({"device", "threads", "reference"})
KNOWN_PARAMS = _POLICY_FIELDS | _TRAIN_FIELDS | _CONTEXT_FIELDS


def split_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    """(policy, train, context, other) params by the field each one sets."""
    out: tuple[dict[str, Any], ...] = ({}, {}, {}, {})
    for key, value in params.items():
        slot = (0 if key in _POLICY_FIELDS else 1 if key in _TRAIN_FIELDS
                else 2 if key in _CONTEXT_FIELDS else 3)
        out[slot][key] = value
    return out


class StepStatus(StrEnum):
    OK = "ok"
    # The step undid its own effect (a canary that failed and was rolled back): the run ends
    # in state rolled_back and no later step runs.
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True, slots=True)
class Artifact:
    """A file or folder a step produced, with the sha256 that later steps verify."""

    path: Path
    sha256: str

    def to_json(self) -> dict[str, str]:
        return {"path": str(self.path), "sha256": self.sha256}

    @classmethod
    def from_json(cls, raw: Mapping[str, str]) -> Artifact:
        return cls(path=Path(raw["path"]), sha256=raw["sha256"])


@dataclass(frozen=True, slots=True)
class StepResult:
    """What a finished step hands on: artifacts with their sums (``model`` is the one the next
    step takes), JSON-able evidence for the audit log, a status."""

    artifacts: Mapping[str, Artifact] = field(default_factory=dict)
    evidence: Mapping[str, Any] = field(default_factory=dict)
    status: StepStatus = StepStatus.OK

    @classmethod
    def of(
        cls,
        artifacts: Mapping[str, Path] | None = None,
        evidence: Mapping[str, Any] | None = None,
        status: StepStatus = StepStatus.OK,
    ) -> StepResult:
        """A result from plain paths, computing each artifact's sha256 (once per path)."""
        sums: dict[Path, str] = {}
        out = {}
        for name, raw in (artifacts or {}).items():
            path = Path(raw)
            if path not in sums:
                sums[path] = content_sha256(path)
            out[name] = Artifact(path, sums[path])
        return cls(artifacts=out, evidence=dict(evidence or {}), status=status)

    @property
    def model_dir(self) -> Path | None:
        model = self.artifacts.get("model")
        return None if model is None else model.path

    @property
    def cached(self) -> bool:
        """A built-in step found its work done by an earlier run on the same inputs."""
        return self.evidence.get("cached") is True

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status.value, "evidence": dict(self.evidence),
                "artifacts": {k: a.to_json() for k, a in self.artifacts.items()}}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> StepResult:
        return cls(artifacts={k: Artifact.from_json(a) for k, a in raw["artifacts"].items()},
                   evidence=dict(raw["evidence"]), status=StepStatus(raw["status"]))


def content_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder as the sorted (relative path, file sha256) list."""
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        raise FileNotFoundError(f"artifact {path} does not exist")
    digest = hashlib.sha256()
    for rel, file_sum in digest_dir(path).items():
        digest.update(f"{rel}\0{file_sum}\n".encode())
    return digest.hexdigest()


class WorkerSpec(StrictModel):
    """A worker's only input, one file per attempt (``.step-NN-attempt-K.spec.json``, mode
    0600 since it may hold the API token): which step, its context, the sums its input
    artifacts must still have, and where to write the result."""

    version: Literal[1] = SPEC_VERSION
    ref: str  # a registered step name or ``module:function``
    context: StepContext
    verify: dict[str, str] = Field(default_factory=dict)  # artifact name -> sha256
    parent_pid: int
    result_path: Path
