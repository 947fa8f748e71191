"""Which versions of a configured model may steer it: the versions its windows track, whose
breaches may start a run, and whose labelled rows a retrain snapshot trains on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Mapping

Published = Callable[[str], Collection[str]]
Deployed = Callable[[str], str | None]


class VersionGate:
    """A configured model's version is admitted when the operator vouches for it: it is in
    the model's ``versions`` allow-list, or the fleet's repository has published it (canaries
    included), or the rollout store says the fleet serves it. Any other name is a producer's
    word only: its events are counted, not windowed, and can never start a run. Where nothing
    can vouch (no allow-list and no fleet) every version is admitted, as before.

    Models not under ``models:`` have no policy (they never retrain) and are not gated here.
    ``serving`` is what a snapshot trains on: the deployed (stable) version when the rollout
    store knows it, else the allow-list."""

    def __init__(self, allowed: Mapping[str, Collection[str] | None], *,
                 published: Published | None = None, deployed: Deployed | None = None,
                 ttl_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._allowed = {m: frozenset(v) if v is not None else None for m, v in allowed.items()}
        self._published = published
        self._deployed = deployed
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        # The repository and rollout store are read at most once per ttl_s per model: this
        # is asked once per new (model, version) pair on the ingest path.
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}

    def gated(self, model: str) -> bool:
        """Whether anything vouches for this model's versions (else all are admitted)."""
        return model in self._allowed and (self._allowed[model] is not None
                                           or self._published is not None)

    def admits(self, model: str, version: str) -> bool:
        if not self.gated(model):
            return True
        allowed = self._allowed[model]
        if allowed is not None and version in allowed:
            return True
        return version in self._vouched(model, refresh=False) or (
            version in self._vouched(model, refresh=True))

    def serving(self, model: str) -> frozenset[str] | None:
        """The versions a retrain of ``model`` may learn from; None: every admitted one."""
        deployed = self._deployed(model) if self._deployed is not None else None
        if deployed is not None:
            return frozenset({deployed})
        return self._allowed.get(model)

    def _vouched(self, model: str, refresh: bool) -> frozenset[str]:
        now = self._clock()
        with self._lock:
            cached = self._cache.get(model)
            if cached is not None and (not refresh or now - cached[0] < self._ttl_s):
                return cached[1]
        versions = set(self._published(model)) if self._published is not None else set()
        deployed = self._deployed(model) if self._deployed is not None else None
        if deployed is not None:
            versions.add(deployed)
        result = frozenset(versions)
        with self._lock:
            self._cache[model] = (now, result)
        return result
