"""Why a pipeline step failed, shaped by what the runner can do about it: give up on the run, or
try the same step again later.

    ActionError
    ├── PermanentError            the same inputs will fail the same way: end the run as failed
    │   ├── BadInput              unusable model dir, snapshot or context (missing, malformed)
    │   ├── ArtifactCorrupted     a file does not match its recorded sha256: refuse to load it
    │   ├── GateFailed            the candidate is not better than the champion (carries evidence)
    │   └── ParityError           the ONNX graph does not compute what the PyTorch model does
    └── RetryableError            the machine, not the inputs: run the step again after a delay
        └── ResourceExhausted     out of memory (CPU or GPU) or disk
"""

from __future__ import annotations

from typing import Any


class ActionError(Exception):
    """Root of every error an action step raises on purpose."""

    retryable: bool = False


class PermanentError(ActionError):
    """Running the step again on the same inputs cannot succeed."""


class BadInput(PermanentError):
    """A model directory, data snapshot or context field the step cannot use."""


class ArtifactCorrupted(PermanentError):
    """An artifact's files do not match the sha256 sums recorded beside them."""


class GateFailed(PermanentError):
    """The gate's verdict is fail. ``evidence`` holds both scores and the rule, for the run log;
    ``result`` is the step's full result (a StepResult) when the step produced one."""

    def __init__(self, message: str, evidence: dict[str, Any], result: Any = None):
        super().__init__(message)
        self.evidence = evidence
        self.result = result


class ParityError(PermanentError):
    """The exported graph's logits differ from PyTorch's by more than the allowed bound."""

    def __init__(self, message: str, max_abs_diff: float):
        super().__init__(message)
        self.max_abs_diff = max_abs_diff


class RetryableError(ActionError):
    """A transient condition of the machine; the same step may succeed later."""

    retryable = True


class ResourceExhausted(RetryableError):
    """Out of memory (host or device) or out of disk while the step ran."""
