"""The one exception root of lifeguard, and the map of the tree under it.

Each room defines its own subtree in its own module; a caller catches a room's root when it
only needs to know which room failed, or a leaf when it can act on the cause::

    LifeguardError                            lifeguard.errors
    ├── ConfigError                           daemon.config: a config file cannot be used
    ├── EventError                            daemon.events: a message that fails the contract
    ├── StepError                             actions.errors: a pipeline step failed
    │   ├── PermanentStepError                    the same inputs fail the same way
    │   │   ├── BadInput, GateFailed, ParityError
    │   │   └── IntegrityError                    (also under DeployError) bytes != recorded sha256
    │   └── RetryableStepError                    the machine, not the inputs: retry later
    │       └── ResourceExhausted
    ├── DeployError                           deploy.errors: the fleet side
    │   ├── IntegrityError                        a file does not match its recorded sha256
    │   ├── RepositoryError, FleetError, ...
    ├── StoreError                            lifeguard.state.engine: the state store
    │   └── StaleLeaseError                       lifeguard.state.fencing: a fenced write lost
    └── SimulatorError                        simulator.errors
"""

from __future__ import annotations


class LifeguardError(Exception):
    """Root of every error lifeguard raises on purpose."""


class IntegrityError(LifeguardError):
    """A file's bytes do not match the sha256 recorded for it: refuse to load it.

    The one name for a sum mismatch, whether a step, the repository or a replica found it."""
