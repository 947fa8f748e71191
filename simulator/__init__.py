"""The traffic simulator: a review corpus with domains that really shift, scenarios, and drivers
that send requests to replicas (or events straight to Kafka) with late, partial labels.

Kept light: importing the package costs nothing; Kafka and httpx load inside the drivers.
Errors (``simulator.errors``)::

    SimulatorError
    ├── SimulatorConfigError    a bad scenario or driver setting; fix the config (also ValueError)
    ├── SimulatorRunError       the run could not go on (broker unreachable)
    └── RequestFailedError      one unanswered request: counted in the stats, not raised
"""
