"""The canary judge on the daemon's own windows: a version's latency, errors and accuracy on
joined labels since the canary began, against the stable version's, by the rollout's rules."""

from __future__ import annotations

from daemon.monitor.window_store import WindowStore
from daemon.monitor.windows import LATENCY, PREDICTION, RID, STATUS, TS
from deploy.config import CanaryConfig
from deploy.judge import TrafficJudge, VersionStats
from deploy.verdict import CanaryQuery, CanaryVerdict


class WindowJudge:
    """A deploy ``Judge``: TrafficJudge's verdict rules over the windows of the queried model."""

    def __init__(self, windows: WindowStore, config: CanaryConfig, z: float = 2.33) -> None:
        self.windows = windows
        self.config = config
        self.z = z

    def __call__(self, query: CanaryQuery) -> CanaryVerdict:
        return _ModelJudge(self.windows, query.model, self.config, self.z)(query)


class _ModelJudge(TrafficJudge):
    def __init__(self, windows: WindowStore, model: str, config: CanaryConfig, z: float) -> None:
        super().__init__(model, config, z)
        self.windows = windows

    def stats(self, version: int, since_s: float) -> VersionStats:
        windows = self.windows.get(self.model)
        if windows is None:
            return VersionStats(0, 0, None, 0, 0)
        with windows.lock:
            rows = windows.current.get(str(version))
            seen = [r for r in rows.rows if r[TS] >= since_s] if rows is not None else []
            labels = dict(rows.labels) if rows is not None else {}
        ok = [r for r in seen if r[STATUS] == "ok"]
        latencies = sorted(r[LATENCY] for r in ok)
        p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] if latencies else None
        joined = [(r[PREDICTION], labels[r[RID]][0]) for r in ok if r[RID] in labels]
        return VersionStats(events=len(seen), errors=len(seen) - len(ok), p95_ms=p95,
                            labelled=len(joined),
                            correct=sum(str(p) == str(t) for p, t in joined))
