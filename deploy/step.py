"""The deploy step of the action pipeline: publish an exported model dir as a new repository
version (once per run id), then roll it out — or, when re-run after a crash, reconcile with
what the fleet serves and finish the rollout that was already under way."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from deploy.config import FleetConfig
from deploy.errors import ReplicaUnavailableError
from deploy.fleet import FleetClient
from deploy.repository import ModelRepository, validate_model_name
from deploy.rollout import RolloutController
from deploy.rollout_store import RolloutRecord, RolloutStore
from deploy.verdict import Judge
from lifeguard.state.fencing import Fence


@dataclass(frozen=True)
class DeployRequest:
    """What the pipeline hands the deploy step."""

    model: str
    source_dir: Path  # an exported model dir (model.onnx, tokenizer, model_info.json)
    run_id: str  # the action run: publishing is idempotent per run id
    trigger: str | None = None
    parent_version: int | None = None
    gate_scores: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_model_name(self.model)
        if not self.run_id:
            raise ValueError("run_id must be non-empty")


@dataclass(frozen=True)
class DeployResult:
    model: str
    version: int
    from_version: int | None
    rollout_id: str
    outcome: Literal["promoted", "rolled_back"]
    reason: str | None
    served: dict[str, int | None]  # per replica, as last observed by the rollout
    resumed: bool  # this call continued a rollout a previous (crashed) call had started


def deploy(request: DeployRequest, fleet_config: FleetConfig, state: Path | str,
           judge: Judge | None = None, fence: Fence | None = None) -> DeployResult:
    """Publish and roll out; returns ``outcome="rolled_back"`` when the canary failed (the old
    version then serves). Raises IntegrityError (permanent) for a version whose files do
    not match their sums, ReplicaUnavailableError (retryable) when no replica answers, and
    StaleLeaseError when ``fence`` (the run's lease) was taken over: nothing more is done.
    ``state`` is the state store's path or URL."""
    repository = ModelRepository(fleet_config.repository)
    store = RolloutStore(state, fence)
    store.check_fence()
    rollout_cfg = fleet_config.rollout
    if rollout_cfg.strategy == "canary" and judge is None:
        raise ValueError("the canary strategy needs a judge")
    record = repository.publish(
        request.model, request.source_dir, run_id=request.run_id, trigger=request.trigger,
        parent_version=request.parent_version, gate_scores=request.gate_scores)
    fleet = FleetClient(fleet_config.replicas, rollout_cfg.request_timeout_s)
    try:
        controller = RolloutController(fleet, repository, store, rollout_cfg)
        resumed = False
        active = store.active(request.model)
        if active is not None:
            # A controller died mid-rollout: finish that rollout from what the fleet serves.
            finished = controller.resume(active, judge)
            resumed = active.to_version == record.version
            if resumed:
                return _result(finished, resumed=True)
        done = store.latest(request.model, record.version)
        if done is not None and done.finished:
            return _result(controller.reconcile(request.model) or done, resumed=False)
        if not any(o.reachable for o in fleet.observe(request.model).values()):
            raise ReplicaUnavailableError(",".join(fleet.urls), "no replica is reachable")
        if rollout_cfg.strategy == "canary":
            assert judge is not None
            rollout = controller.canary(request.model, record.version, judge)
        else:
            rollout = controller.rolling(request.model, record.version)
        return _result(rollout, resumed=resumed)
    finally:
        fleet.close()


def reconcile_fleet(model: str, fleet_config: FleetConfig, state: Path | str,
                    fence: Fence | None = None) -> RolloutRecord | None:
    """After a deploy step died (its worker killed at its timeout), put the fleet back on one
    version: an unfinished canary is abandoned to the stable version, drifted replicas are
    brought back to the last rollout's outcome. None when the model never rolled out."""
    store = RolloutStore(state, fence)
    fleet = FleetClient(fleet_config.replicas, fleet_config.rollout.request_timeout_s)
    try:
        controller = RolloutController(fleet, ModelRepository(fleet_config.repository), store,
                                       fleet_config.rollout)
        return controller.reconcile(model)
    finally:
        fleet.close()


def _result(record: RolloutRecord, resumed: bool) -> DeployResult:
    return DeployResult(
        model=record.model, version=record.to_version, from_version=record.from_version,
        rollout_id=record.id, outcome="promoted" if record.phase == "done" else "rolled_back",
        reason=record.reason, served=dict(record.observed), resumed=resumed)
