"""What can go wrong in the simulator, sorted by what the caller can do about it.

    SimulatorError
    ├── SimulatorConfigError    permanent: a setting that cannot work; fix it and start again
    ├── SimulatorRunError       the run stopped (broker unreachable); retrying later may work
    └── RequestFailedError      one request the fleet did not answer: counted in the stats
                                under its ``reason``, never raised to the caller
"""

from __future__ import annotations

from lifeguard.errors import LifeguardError


class SimulatorError(LifeguardError):
    """Root of every error the simulator raises."""


class SimulatorConfigError(SimulatorError, ValueError):
    """A scenario or driver setting that cannot work (ValueError too, as the style asks)."""


class SimulatorRunError(SimulatorError):
    """The run could not go on; what it had done so far is still in the stats."""


class RequestFailedError(SimulatorError):
    """One request that got no answer; ``reason`` is its short label in the stats."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
