"""The contract between the runner and a pipeline step: what a step gets, what it returns, and
how it fails. Pure dataclasses and exceptions, so steps import it without importing the daemon.

A step is a callable ``fn(inputs: StepInputs) -> StepOutcome``. It must be idempotent: the
runner calls it again after a crash if its completion was not recorded yet.

Exception tree (what the runner does with each)::

    StepError                    root: never raised as-is
    ├── PermanentStepError       fail the run now, no retry
    │   └── GateFailed           the candidate did not beat the champion; evidence says why
    └── RetryableStepError       retry the step after ``delay_s`` (or the pipeline's backoff)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from deploy.integrity import sha256_file


class StepError(Exception):
    """Root of every error a step raises on purpose; ``evidence`` goes into the audit log."""

    def __init__(self, message: str, evidence: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.evidence: dict[str, Any] = dict(evidence or {})


class PermanentStepError(StepError):
    """Retrying cannot help (bad params, missing data, integrity failure): fail the run."""


class GateFailed(PermanentStepError):
    """The candidate lost to the champion (or missed an absolute floor): stop before deploy."""


class RetryableStepError(StepError):
    """A transient failure (fleet busy, network): the runner retries after a delay."""

    def __init__(
        self,
        message: str,
        evidence: Mapping[str, Any] | None = None,
        delay_s: float | None = None,
    ) -> None:
        super().__init__(message, evidence)
        if delay_s is not None and delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {delay_s}")
        self.delay_s = delay_s


class StepStatus(StrEnum):
    OK = "ok"
    # The step undid its own effect (a canary that failed and was rolled back): the run ends
    # in state rolled_back and no later step runs.
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True, slots=True)
class Artifact:
    """A file or directory a step produced, with the sha256 that later steps verify."""

    path: Path
    sha256: str

    def to_json(self) -> dict[str, str]:
        return {"path": str(self.path), "sha256": self.sha256}

    @classmethod
    def from_json(cls, raw: Mapping[str, str]) -> Artifact:
        return cls(path=Path(raw["path"]), sha256=raw["sha256"])


@dataclass(frozen=True, slots=True)
class StepInputs:
    """Everything a step may use; nothing else (no daemon objects, no store)."""

    run_id: str
    model: str
    step_index: int
    step_name: str
    work_dir: Path  # per run; shared by its steps, kept after the run for forensics
    params: Mapping[str, Any] = field(default_factory=dict)
    artifacts: Mapping[str, Path] = field(default_factory=dict)  # from earlier steps
    snapshot_path: Path | None = None  # labelled data captured when the run was triggered
    champion_path: Path | None = None  # the model serving when the run was triggered
    attempt: int = 1

    def __post_init__(self) -> None:
        if self.step_index < 0:
            raise ValueError(f"step_index must be >= 0, got {self.step_index}")
        if self.attempt < 1:
            raise ValueError(f"attempt must be >= 1, got {self.attempt}")

    @property
    def step_dir(self) -> Path:
        """A directory only this step writes to, stable across retries (so re-runs overwrite)."""
        return self.work_dir / f"{self.step_index:02d}-{self.step_name}"


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What a finished step hands on: artifacts (with sums), JSON-able evidence, a status."""

    artifacts: Mapping[str, Artifact] = field(default_factory=dict)
    evidence: Mapping[str, Any] = field(default_factory=dict)
    status: StepStatus = StepStatus.OK

    @classmethod
    def of(
        cls,
        artifacts: Mapping[str, Path] | None = None,
        evidence: Mapping[str, Any] | None = None,
        status: StepStatus = StepStatus.OK,
    ) -> StepOutcome:
        """Build an outcome from plain paths, computing each artifact's sha256."""
        paths = {name: Path(p) for name, p in (artifacts or {}).items()}
        sums = {name: Artifact(p, content_sha256(p)) for name, p in paths.items()}
        return cls(artifacts=sums, evidence=dict(evidence or {}), status=status)


def content_sha256(path: Path) -> str:
    """sha256 of a file, or of a directory as the sorted (relative path, file sha256) list."""
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        raise FileNotFoundError(f"artifact {path} does not exist")
    digest = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        digest.update(p.relative_to(path).as_posix().encode())
        digest.update(b"\0")
        digest.update(sha256_file(p).encode())
        digest.update(b"\n")
    return digest.hexdigest()
