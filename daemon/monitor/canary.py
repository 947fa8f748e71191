"""The canary judge on the daemon's own windows: a version's errors, latency (a generator's
TTFT and time per token), accuracy, ratings and reference scores on joined feedback since the
canary began, against the stable version's, by the rollout's rules."""

from __future__ import annotations

from collections import OrderedDict

from daemon.monitor.window_store import WindowStore
from deploy.config import CanaryConfig
from deploy.judge import Mean, TrafficJudge, VersionStats, generator_timing
from deploy.verdict import CanaryQuery, CanaryVerdict
from lifeguard.stats import percentile

MAX_SCORES = 50_000


class WindowJudge:
    """A deploy ``Judge``: TrafficJudge's verdict rules over the windows of the queried model."""

    def __init__(self, windows: WindowStore, config: CanaryConfig, z: float = 2.33) -> None:
        self.windows = windows
        self.config = config
        self.z = z
        # model -> request_id -> the answer's reference score: the judge is polled every
        # second and ROUGE-L is pure Python, so each pair is scored once.
        self.scores: dict[str, OrderedDict[str, float]] = {}

    def __call__(self, query: CanaryQuery) -> CanaryVerdict:
        return _ModelJudge(self, query.model)(query)

    def stats_of(self, model: str, version: int, since_s: float) -> VersionStats:
        """One version's numbers since ``since_s``: what the verdict is computed from."""
        return _ModelJudge(self, model).stats(version, since_s)


class _ModelJudge(TrafficJudge):
    def __init__(self, owner: WindowJudge, model: str) -> None:
        super().__init__(model, owner.config, owner.z, max_labels=MAX_SCORES)
        self.owner = owner
        self._scores = owner.scores.setdefault(model, OrderedDict())

    def stats(self, version: int, since_s: float) -> VersionStats:
        windows = self.owner.windows.get(self.model)
        if windows is None:
            return VersionStats(0, 0, None, 0, 0)
        seen = windows.rows_since(str(version), since_s)
        ok = [r for r in seen.rows if r.status == "ok"]
        joined = [(r, seen.labels[r.request_id]) for r in ok if r.request_id in seen.labels]
        # A classifier's prediction is compared with a class label only: a reference or a
        # rating is not a label (for a generator that comparison meant nothing).
        classified = [(r.prediction, j.label) for r, j in joined
                      if j.label is not None and r.prediction is not None]
        ratings = [j.rating for _, j in joined if j.rating is not None]
        scores = self._reference_scores([(r.request_id, r.output_text, j.reference)
                                         for r, j in joined
                                         if j.reference is not None and r.output_text is not None])
        ttft, tpot = generator_timing([r.latency_ms for r in ok], [r.ttft_ms for r in ok],
                                      [r.tokens_out for r in ok])
        generator = ttft is not None or any(r.output_text is not None for r in ok)
        return VersionStats(
            events=len(seen.rows), errors=len(seen.rows) - len(ok),
            p95_ms=percentile([r.latency_ms for r in ok], 95),
            labelled=len(joined) if generator else len(classified),
            correct=sum(str(p) == str(t) for p, t in classified),
            ttft_p95_ms=ttft, tpot_p95_ms=tpot, rating=Mean.of(ratings),
            reference_score=Mean.of(scores), generator=generator)
