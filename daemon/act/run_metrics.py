"""Action runs on /metrics: runs by model and state, and each model's deployed version, read
from the state store at scrape time; and which models this instance owns (acts for)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from daemon.act.store import StateStore


class RunCollector(Collector):
    """Action runs by model and state, and the version each model's fleet serves, read from
    the state store at scrape time (runs execute in workers; their state lives in the store)."""

    def __init__(self, store: StateStore, deployed: Callable[[str], str | None]) -> None:
        self.store = store
        self.deployed = deployed

    def collect(self) -> Iterable[Metric]:
        runs = GaugeMetricFamily("lifeguard_action_runs", "Action runs, by model and state.",
                                 labels=["model", "state"])
        version = GaugeMetricFamily("lifeguard_deployed_version",
                                    "The version a model's fleet serves once its last rollout "
                                    "settled.", labels=["model"])
        counts: Counter[tuple[str, str]] = Counter(
            (run.model, run.state.value) for run in self.store.list_runs(limit=100_000))
        for (model, state), n in sorted(counts.items()):
            runs.add_metric([model, state], n)
        for model in sorted({m for m, _ in counts}):
            deployed = self.deployed(model)
            if deployed is not None and deployed.isdigit():
                version.add_metric([model], int(deployed))
        yield runs
        yield version

    def describe(self) -> Iterable[Metric]:
        return []


class OwnershipCollector(Collector):
    """``lifeguard_model_owned{model}``: 1 for each configured model this instance acts for
    (its partition is assigned here), 0 for the others; the group's instances sum to one."""

    def __init__(self, models: Iterable[str], owns: Callable[[str], bool]) -> None:
        self.models = sorted(models)
        self.owns = owns

    def collect(self) -> Iterable[Metric]:
        owned = GaugeMetricFamily("lifeguard_model_owned", "1 when this instance owns the "
                                  "model (evaluates it, runs its actions).", labels=["model"])
        for model in self.models:
            owned.add_metric([model], 1.0 if self.owns(model) else 0.0)
        yield owned

    def describe(self) -> Iterable[Metric]:
        return []
