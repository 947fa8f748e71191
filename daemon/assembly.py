"""Builds the daemon's parts from the root config, in the order the loop runs: the ingest sinks,
the monitor (windows, label join, evaluator) and the acting half (policy, runner, control API).

The only module that knows every room; the supervisor (``daemon.app``) owns their lifetime.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from actions.contract import DeployTarget, WorkerSettings
from daemon.act.champions import Champions
from daemon.act.control import ControlPlane
from daemon.act.run_metrics import OwnershipCollector, RunCollector
from daemon.act.store import StateStore
from daemon.config import DaemonConfig, ModelConfig
from daemon.ingest.batch import (
    EventSink,
    PartitionBatch,
    RejectedEvents,
    TopicPartitionId,
    apply_each,
)
from daemon.monitor.config import LabelJoinConfig, ReferenceConfig, WindowConfig
from daemon.monitor.detector_pass import ModelSpec
from daemon.monitor.evaluation import Evaluation
from daemon.monitor.evaluator import Evaluator
from daemon.monitor.snapshots import SnapshotWriter
from daemon.monitor.versions import VersionGate
from daemon.monitor.window_store import WindowStore, register
from daemon.monitor.windows import MonitoringSettings, load_reference

if TYPE_CHECKING:
    from fastapi import APIRouter

log = logging.getLogger(__name__)

DEFAULT_SETTINGS = MonitoringSettings(WindowConfig(), ReferenceConfig(), LabelJoinConfig())


def usable_cores() -> int:
    return max(1, len(os.sched_getaffinity(0)))


# -- ingest -----------------------------------------------------------------------------------


class FanoutSink:
    """Applies each batch to several sinks in order (metrics first: cheapest, never fails).

    A sink that fails is retried alone, event by event, and the other sinks still get the
    batch once: a poison event costs only itself, and nothing is counted twice.
    """

    def __init__(self, sinks: Sequence[EventSink]) -> None:
        self.sinks = list(sinks)

    def apply(self, batch: PartitionBatch) -> None:
        failures: dict[int, str] = {}
        for sink in self.sinks:
            try:
                sink.apply(batch)
            except RejectedEvents as exc:
                failures.update(exc.failures)
            except Exception:
                log.exception("a sink failed on a batch; retrying it event by event")
                failures.update(apply_each(sink, batch))
        if failures:
            raise RejectedEvents(failures)

    def release(self, partitions: Sequence[TopicPartitionId]) -> None:
        for sink in self.sinks:
            sink.release(partitions)


# -- monitor ----------------------------------------------------------------------------------


def settings_of(model: ModelConfig) -> MonitoringSettings:
    return MonitoringSettings(model.window, model.reference, model.labels)


def spec_of(model: ModelConfig, default_reports: Path) -> ModelSpec:
    """What the evaluation side needs of a model: plain settings, no suite (that is built
    where the passes run)."""
    return ModelSpec(model.name, model.detectors.model_copy(update={"task": model.task}),
                     model.evaluation, tuple(model.window.features), model.embedding_model,
                     model.evaluation.report_dir or default_reports)


@dataclass
class Monitoring:
    windows: WindowStore
    evaluator: Evaluator

    def start(self) -> None:
        self.evaluator.start()

    def stop(self) -> None:
        self.evaluator.stop()


class EvaluatorNudge:
    """The last sink in the chain: asks for a pass once enough new events have arrived, and
    forgets a released partition's models in the evaluator's caches."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator

    def apply(self, batch: PartitionBatch) -> None:
        if not batch.replay:
            self.evaluator.nudge()

    def release(self, partitions: Sequence[TopicPartitionId]) -> None:
        self.evaluator.prune()


def version_gate(config: DaemonConfig) -> VersionGate:
    """What vouches for a configured model's versions: its ``versions`` list, and with a
    fleet the repository's published versions and the rollout store's deployed one."""
    allowed = {m.name: m.versions for m in config.models}
    if config.fleet is None:
        return VersionGate(allowed)
    from deploy.repository import ModelRepository
    from deploy.rollout_store import RolloutStore

    repository = ModelRepository(config.fleet.repository)
    rollouts = RolloutStore(config.state.location)

    def published(model: str) -> list[str]:
        return [str(v) for v in repository.versions(model)]

    def deployed(model: str) -> str | None:
        record = rollouts.latest(model)
        version = None if record is None else record.settled_version
        return None if version is None else str(version)

    return VersionGate(allowed, published=published, deployed=deployed)


def build_monitoring(config: DaemonConfig, registry: CollectorRegistry,
                     sinks: Sequence[Callable[[Evaluation], None]]) -> Monitoring:
    by_name = {m.name: m for m in config.models}
    references = {m.name: load_reference(m.reference.path) for m in config.models
                  if m.reference.path is not None}
    windows = WindowStore(lambda name: settings_of(by_name[name]) if name in by_name else None,
                          DEFAULT_SETTINGS, max_models=config.kafka.max_models + len(by_name),
                          reference_for=references.get, versions=version_gate(config))
    register(windows, registry)
    default_reports = config.state.path.parent / "reports"
    specs = {m.name: spec_of(m, default_reports) for m in config.models}
    evaluator = Evaluator(windows, specs, registry, sinks, config.evaluation)
    return Monitoring(windows, evaluator)


# -- act --------------------------------------------------------------------------------------


def worker_settings(config: DaemonConfig, api_url: str) -> WorkerSettings:
    """What every step's spec file carries from the daemon: the shared content-addressed
    outputs, the cores a worker may use, and (with a fleet) where and how to deploy."""
    deploy = None
    if config.fleet is not None:
        # paths resolved here, against the daemon's directory: a worker runs in its run's folder
        fleet = config.fleet.model_copy(update={"repository": config.fleet.repository.resolve()})
        deploy = DeployTarget(fleet=fleet, state_path=Path(config.state.path).resolve(),
                              state_url=config.state.url, api_url=api_url,
                              token=config.api.resolved_token())
    return WorkerSettings(output_dir=(Path(config.state.artifacts_dir) / "cache").resolve(),
                          threads=min(2, usable_cores()), deploy=deploy)


# The worker process's environment: library switches only (lifeguard's settings are in the spec).
WORKER_ENV = {"HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false"}


def build_control(config: DaemonConfig, store: StateStore, windows: WindowStore,
                  api_url: str, owns: Callable[[str], bool], registry: CollectorRegistry
                  ) -> tuple[ControlPlane, list[APIRouter]]:
    from daemon.monitor.canary import WindowJudge
    from deploy.analysis import canary_analysis_router
    from deploy.config import CanaryConfig
    from deploy.rollout_store import RolloutStore

    rollouts = RolloutStore(config.state.location)

    def deployed(model: str) -> str | None:
        record = rollouts.latest(model)
        version = None if record is None else record.settled_version
        return None if version is None else str(version)

    champions = Champions(store, {m.name: m.base_model for m in config.models})
    control = ControlPlane(
        config, store,
        snapshot_provider=SnapshotWriter(windows, Path(config.state.artifacts_dir) / "snapshots"),
        champion_provider=champions, deployed_version=deployed, owns=owns,
        version_admitted=windows.versions.admits,
        worker_settings=worker_settings(config, api_url), worker_env=WORKER_ENV,
        registry=registry)
    registry.register(RunCollector(store, deployed))
    registry.register(OwnershipCollector([m.name for m in config.models], owns))
    canary = config.fleet.rollout.canary if config.fleet is not None else CanaryConfig()
    routers = [control.router, canary_analysis_router(WindowJudge(windows, canary), rollouts)]
    return control, routers
