"""What can go wrong on the serving-fleet side, sorted by what the caller can do about it.

    LifeguardError                  lifeguard.errors
    ├── IntegrityError              a version's files do not match its recorded sha256 sums
    │                               (the repository refuses it; a rollout never starts)
    └── DeployError
        ├── PermanentDeployError        retrying the same call will fail the same way
        │   ├── InvalidNameError        a model name or version that could escape the repository
        │   ├── VersionNotFoundError    no such version in the repository
        │   ├── ReplicaRejectedError    a replica answered, and said no (failed load, bad request)
        │   └── SmokeTestError          a replica loaded the version but its inference was wrong
        ├── RetryableDeployError        try again after a delay
        │   └── ReplicaUnavailableError a replica did not answer (down, timed out, 5xx)
        ├── ServingError (deploy.serving)  a request a replica cannot serve as asked
        └── ApiError (deploy.openai_api)   an error answer of the replica's OpenAI API
"""

from __future__ import annotations

from lifeguard.errors import LifeguardError


class DeployError(LifeguardError):
    """Root of every error raised by ``deploy`` (a sum mismatch is lifeguard's IntegrityError)."""


class PermanentDeployError(DeployError):
    """Retrying the same call will not help."""


class RetryableDeployError(DeployError):
    """A transient fault: the same call may succeed later."""


class InvalidNameError(PermanentDeployError, ValueError):
    """A model name or version that is not a plain identifier (path traversal, empty, ...)."""


class VersionNotFoundError(PermanentDeployError):
    """The repository holds no such model version."""


class ReplicaRejectedError(PermanentDeployError):
    """A replica answered with a client error: the request itself is wrong for it."""

    def __init__(self, url: str, status: int, message: str) -> None:
        super().__init__(f"{url}: HTTP {status}: {message}")
        self.url = url
        self.status = status
        self.message = message


class SmokeTestError(PermanentDeployError):
    """A replica reported the version loaded, but a smoke inference failed or came from
    another version."""


class ReplicaUnavailableError(RetryableDeployError):
    """A replica did not answer in time, refused the connection, or failed on its side."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(f"{url}: {message}")
        self.url = url
        self.message = message
