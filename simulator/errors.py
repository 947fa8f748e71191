"""What can go wrong in the simulator, sorted by what the caller can do about it.

    SimulatorError
    ├── SimulatorConfigError    permanent: a setting that cannot work; fix it and start again
    └── SimulatorRunError       the run stopped (broker unreachable); retrying later may work

A request a replica fails is not an error of the simulator: it is counted in the stats.
"""

from __future__ import annotations


class SimulatorError(Exception):
    """Root of every error the simulator raises."""


class SimulatorConfigError(SimulatorError, ValueError):
    """A scenario or driver setting that cannot work (ValueError too, as the style asks)."""


class SimulatorRunError(SimulatorError):
    """The run could not go on; what it had done so far is still in the stats."""
