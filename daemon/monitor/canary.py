"""The canary judge on the daemon's own windows: a version's latency, errors and accuracy on
joined labels since the canary began, against the stable version's, by the rollout's rules."""

from __future__ import annotations

from daemon.monitor.window_store import WindowStore
from deploy.config import CanaryConfig
from deploy.judge import TrafficJudge, VersionStats
from deploy.verdict import CanaryQuery, CanaryVerdict
from lifeguard.stats import percentile


class WindowJudge:
    """A deploy ``Judge``: TrafficJudge's verdict rules over the windows of the queried model."""

    def __init__(self, windows: WindowStore, config: CanaryConfig, z: float = 2.33) -> None:
        self.windows = windows
        self.config = config
        self.z = z

    def __call__(self, query: CanaryQuery) -> CanaryVerdict:
        return _ModelJudge(self.windows, query.model, self.config, self.z)(query)

    def stats_of(self, model: str, version: int, since_s: float) -> VersionStats:
        """One version's numbers since ``since_s``: what the verdict is computed from."""
        return _ModelJudge(self.windows, model, self.config, self.z).stats(version, since_s)


class _ModelJudge(TrafficJudge):
    def __init__(self, windows: WindowStore, model: str, config: CanaryConfig, z: float) -> None:
        super().__init__(model, config, z)
        self.windows = windows

    def stats(self, version: int, since_s: float) -> VersionStats:
        windows = self.windows.get(self.model)
        if windows is None:
            return VersionStats(0, 0, None, 0, 0)
        seen = windows.rows_since(str(version), since_s)
        ok = [r for r in seen.rows if r.status == "ok"]
        joined = [(r.prediction, seen.labels[r.request_id][0]) for r in ok
                  if r.request_id in seen.labels]
        return VersionStats(events=len(seen.rows), errors=len(seen.rows) - len(ok),
                            p95_ms=percentile([r.latency_ms for r in ok], 95),
                            labelled=len(joined),
                            correct=sum(str(p) == str(t) for p, t in joined))
