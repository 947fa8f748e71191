"""The acting half of the daemon in one bundle: policy engine, runner and control-API router
over one state store, built from the root config. The supervisor starts and stops it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.act.api import create_router
from daemon.act.policy import PathProvider, PolicyEngine, TriggerDecision
from daemon.act.runner import Runner
from daemon.act.runs import ActionRun
from daemon.act.store import Fence, StateStore
from daemon.monitor.evaluation import Evaluation

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from fastapi import APIRouter
    from prometheus_client import CollectorRegistry

    from actions.contract import WorkerSettings
    from daemon.config import DaemonConfig
    from daemon.monitor.config import ReferenceConfig


def describe_reference(reference: ReferenceConfig) -> dict[str, Any]:
    """What a model's current windows are compared against, for the evidence of a run."""
    if reference.path is not None:
        return {"kind": "file", "path": str(reference.path)}
    return {"kind": "first_n", "first_n": reference.first_n}


class ControlPlane:
    """Evaluations and alerts in, durable runs out, readable and steerable over HTTP.

    ``on_evaluation`` is the evaluator's callback: it stores the evaluation (once; a replay is
    ignored) and decides. Do not also call ``store.add_evaluation`` for the same evaluation,
    or the policy will see it as a replay.
    """

    def __init__(
        self,
        config: DaemonConfig,
        store: StateStore,
        snapshot_provider: PathProvider | None = None,
        champion_provider: PathProvider | None = None,
        deployed_version: Callable[[str], str | None] | None = None,
        owns: Callable[[str], bool] | None = None,
        worker_settings: WorkerSettings | None = None,
        worker_env: Mapping[str, str] | None = None,
        registry: CollectorRegistry | None = None,
        version_admitted: Callable[[str, str], bool] | None = None,
    ) -> None:
        settings = config.policy_settings()
        self.store = store
        self._snapshot = snapshot_provider
        self._champion = champion_provider
        self.engine = PolicyEngine(store, settings.models, settings.pipelines,
                                   snapshot_provider, champion_provider, owns=owns,
                                   version_admitted=version_admitted)
        work_root = (Path(settings.runner.work_dir) if settings.runner.work_dir
                     else Path(config.state.path).parent / "runs")
        self.runner = Runner(store, work_root, settings.runner.max_concurrent_runs,
                             settings.runner.poll_interval, worker_settings, worker_env,
                             owns=owns, registry=registry, owner=settings.runner.instance_id,
                             lease_ttl_s=settings.runner.lease_ttl, prepare=self._prepare,
                             after_timeout=self._after_timeout)
        self._fleet = config.fleet
        self._state = config.state.location
        self.router: APIRouter = create_router(
            store, self.engine, config.api.resolved_token(), settings.alerts,
            on_change=self.runner.wake, deployed_version=deployed_version,
            webhook_token=config.api.resolved_webhook_token(),
            references={m.name: describe_reference(m.reference) for m in config.models},
        )

    def _after_timeout(self, run: ActionRun, step: str, fence: Fence | None) -> None:
        """A deploy step killed at its timeout may have left a canary on part of the fleet:
        reconcile the fleet to one version now, not at the model's next deploy."""
        if step != "deploy" or self._fleet is None:
            return
        from deploy.step import reconcile_fleet

        record = reconcile_fleet(run.model, self._fleet, self._state, fence)
        self.store.audit("fleet.reconciled", "runner", run.model, run.id,
                         {"after": f"{step} timed out",
                          "rollout": None if record is None else record.id,
                          "phase": None if record is None else record.phase})

    def _prepare(self, run: ActionRun, fence: Fence) -> None:
        """The owner's snapshot for a run triggered on another instance (an alert that
        landed there): taken from this instance's windows before the first step."""
        snapshot = self._snapshot(run.model) if self._snapshot is not None else None
        champion = self._champion(run.model) if self._champion is not None else None
        self.store.fill_paths(run.id, snapshot, champion, "runner", fence)

    def on_evaluation(self, evaluation: Evaluation) -> TriggerDecision:
        try:
            decision = self.engine.on_evaluation(evaluation)
        except Exception as exc:  # the evaluator must go on; the next evaluation re-decides
            log.exception("policy failed on evaluation %s", evaluation.id)
            self.store.audit("trigger.failed", "policy", evaluation.model, None,
                             {"evaluation_id": evaluation.id, "error": repr(exc)})
            return TriggerDecision(model=evaluation.model, fire=False, reason=f"error: {exc!r}")
        if decision.fire:
            self.runner.wake()
        return decision

    def start(self) -> ControlPlane:
        self.runner.start()
        return self

    def stop(self) -> None:
        self.runner.stop()
