"""Wires the acting half into the daemon: the ControlPlane with the real step registry, the
snapshot and champion providers, the worker environment, and the canary-analysis router.

Workers learn where things are from their environment (see actions.pipeline), so torch loads
only in those workers, never in the daemon's process.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from actions.pipeline import STEP_REFS
from daemon.config import DaemonConfig
from daemon.control import ControlPlane
from daemon.runs import RunState
from daemon.snapshots import SnapshotWriter
from daemon.store import StateStore
from daemon.window_store import WindowStore

if TYPE_CHECKING:
    from fastapi import APIRouter
    from prometheus_client import CollectorRegistry


def usable_cores() -> int:
    return max(1, len(os.sched_getaffinity(0)))


class Champions:
    """Which training checkpoint is in production: the fine-tuned candidate of the newest run
    that succeeded (its rollout promoted), else the configured base model."""

    def __init__(self, store: StateStore, config: DaemonConfig) -> None:
        self.store = store
        self.base = {m.name: m.base_model for m in config.models}

    def __call__(self, model: str) -> Path | None:
        for run in self.store.list_runs(model=model, states=[RunState.SUCCEEDED], limit=20):
            for step in self.store.steps(run.id):
                if step.name == "fine_tune" and "model" in step.artifacts:
                    return Path(step.artifacts["model"]["path"])
        return self.base.get(model)


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


def worker_environment(config: DaemonConfig, api_url: str) -> dict[str, str]:
    artifacts = Path(config.state.artifacts_dir)
    env = {
        "LIFEGUARD_ARTIFACTS": str((artifacts / "cache").resolve()),
        "LIFEGUARD_STATE": str(Path(config.state.path).resolve()),
        "LIFEGUARD_THREADS": str(min(2, usable_cores())),
        "LIFEGUARD_URL": api_url,
        "HF_HUB_OFFLINE": "1",
        "DO_NOT_TRACK": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    if config.fleet is not None:
        env["LIFEGUARD_FLEET"] = config.fleet.model_dump_json()
    token = config.api.resolved_token()
    if token:
        env["LIFEGUARD_TOKEN"] = token
    return env


def build_control(config: DaemonConfig, store: StateStore, windows: WindowStore,
                  api_url: str, owns: Callable[[str], bool], registry: CollectorRegistry
                  ) -> tuple[ControlPlane, list[APIRouter]]:
    from daemon.canary import WindowJudge
    from deploy.analysis import canary_analysis_router
    from deploy.config import CanaryConfig
    from deploy.rollout_store import RolloutStore

    rollouts = RolloutStore(config.state.path)

    def deployed(model: str) -> str | None:
        record = rollouts.latest(model)
        version = None if record is None else record.settled_version
        return None if version is None else str(version)

    control = ControlPlane(
        config, store,
        snapshot_provider=SnapshotWriter(windows, Path(config.state.artifacts_dir) / "snapshots"),
        champion_provider=Champions(store, config), deployed_version=deployed, owns=owns,
        step_registry=STEP_REFS, worker_env=worker_environment(config, api_url))
    registry.register(RunCollector(store, deployed))
    canary = config.fleet.rollout.canary if config.fleet is not None else CanaryConfig()
    routers = [control.router, canary_analysis_router(WindowJudge(windows, canary), rollouts)]
    return control, routers
