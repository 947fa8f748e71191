"""The one exception root of lifeguard, and the map of the tree under it.

Each room defines its own subtree in its own module, where each class is documented; a caller
catches a room's root when it only needs to know which room failed, or a leaf when it can act
on the cause::

    LifeguardError                            lifeguard.errors
    ├── IntegrityError                        lifeguard.errors: bytes != their recorded sha256
    │                                         (any room: an artifact, a repository version, a
    │                                         step's input); never retried
    ├── ConfigError (+ValueError)             daemon.config: a config file cannot be used
    ├── EventError (+ValueError)              daemon.events: a message that fails the contract
    ├── RejectedEvents                        daemon.ingest.batch: a sink applied all but these
    ├── WorkerLost                            daemon.monitor.evaluation_worker: a pass lost
    ├── StoreError                            lifeguard.state.engine: the state store is unusable
    │   └── StaleLeaseError                       lifeguard.state.fencing: a stale fence
    ├── AlertPayloadError (+ValueError)       daemon.act.alerts: not an Alertmanager payload
    ├── StepError                             actions.errors: a pipeline step failed
    │   ├── PermanentStepError                    the same inputs fail the same way
    │   │   └── BadInput, GateFailed, ParityError
    │   └── RetryableStepError                    the machine, not the inputs: retry later
    │       └── ResourceExhausted
    ├── DeployError                           deploy.errors: the fleet side
    │   ├── PermanentDeployError                  InvalidNameError, VersionNotFoundError, ...
    │   ├── RetryableDeployError                  ReplicaUnavailableError
    │   ├── ServingError                          deploy.serving: a request a replica refuses
    │   └── ApiError                              deploy.openai_api: an OpenAI API error answer
    ├── SimulatorError                        simulator.errors
    │   └── SimulatorConfigError, SimulatorRunError, RequestFailedError
    └── _TooLarge                             lifeguard.asgi: a body past its limit (413)
"""

from __future__ import annotations


class LifeguardError(Exception):
    """Root of every error lifeguard raises on purpose."""


class IntegrityError(LifeguardError):
    """A file's bytes do not match the sha256 recorded for it: refuse to load it.

    The one name for a sum mismatch, whether a step, the repository or a replica found it."""
