"""Why a pipeline step failed, shaped by what the runner can do about it: fail the run, or run
the same step again later. Every class is documented here once; ``evidence`` goes to the audit.

    LifeguardError                    lifeguard.errors
    ├── IntegrityError                bytes that do not match their recorded sha256 (a loaded
    │                                 model, an artifact, an earlier step's output): permanent
    └── StepError                     root of the step tree: never raised as-is
        ├── PermanentStepError        the same inputs fail the same way: fail the run now
        │   ├── BadInput              unusable model dir, snapshot, param or context field
        │   ├── GateFailed            the candidate did not beat the champion; evidence says why
        │   └── ParityError           the ONNX graph does not compute what the PyTorch model does
        └── RetryableStepError        the machine, not the inputs: retry after ``delay_s`` (or
            │                         the pipeline's backoff)
            └── ResourceExhausted     out of memory (CPU or GPU) or disk

A step may raise ``lifeguard.errors.IntegrityError`` as it is (the one name for a sum mismatch,
whichever room finds it); it is permanent by classification: ``is_retryable`` is true only for
RetryableStepError, so it and any unexpected exception (a bug does not fix itself on retry, and
retries of training steps cost hours) fail the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lifeguard.errors import LifeguardError


class StepError(LifeguardError):
    """Root of every error a step raises on purpose; ``evidence`` goes into the audit log."""

    def __init__(self, message: str, evidence: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.evidence: dict[str, Any] = dict(evidence or {})


class PermanentStepError(StepError):
    """Running the step again on the same inputs cannot succeed: fail the run."""


class BadInput(PermanentStepError):
    """A model directory, data snapshot, param or context field the step cannot use."""


class GateFailed(PermanentStepError):
    """The gate's verdict is fail: ``evidence`` holds both scores and the rule."""


class ParityError(PermanentStepError):
    """The exported graph's logits differ from PyTorch's by more than the allowed bound."""

    def __init__(self, message: str, max_abs_diff: float) -> None:
        super().__init__(message, {"max_abs_diff": max_abs_diff})
        self.max_abs_diff = max_abs_diff


class RetryableStepError(StepError):
    """A transient condition (the machine, a busy fleet): the same step may succeed later."""

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


class ResourceExhausted(RetryableStepError):
    """Out of memory (host or device) or out of disk while the step ran."""


def is_retryable(exc: BaseException) -> bool:
    """The one classification the worker and ``lifeguard step`` share: only a
    RetryableStepError is worth running again; everything else fails for good."""
    return isinstance(exc, RetryableStepError)
