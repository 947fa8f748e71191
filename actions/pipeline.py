"""The runner's view of the action steps: ``fn(StepInputs) -> StepOutcome`` adapters around
the steps (which take a StepContext), plus the deploy step that hands a model to the fleet.

The model moves forward through the artifact ``model``: fine_tune's candidate, the gate's
verdict on it, its ONNX export, the int8 (or kept fp32) export that deploy ships. The worker's
environment names the shared places: LIFEGUARD_ARTIFACTS (content-addressed step outputs, so a
rerun is a no-op), LIFEGUARD_THREADS, LIFEGUARD_DEVICE, LIFEGUARD_URL/LIFEGUARD_TOKEN (the
daemon's API, whose canary analysis judges a canary), LIFEGUARD_FLEET (the fleet config, JSON),
LIFEGUARD_STATE (the state store's path or URL, which holds rollouts) and LIFEGUARD_FENCE (the
run's lease: the deploy writes nothing once another instance holds the run).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from actions.context import ActionPolicy, StepContext, StepResult, TrainConfig
from actions.errors import ActionError, GateFailed
from actions.step_api import (
    GateFailed as RunnerGateFailed,
)
from actions.step_api import (
    PermanentStepError,
    RetryableStepError,
    StepInputs,
    StepOutcome,
    StepStatus,
)

_POLICY_FIELDS = set(ActionPolicy.model_fields)
_TRAIN_FIELDS = set(TrainConfig.model_fields)


_CONTEXT_FIELDS = {"device", "threads", "reference"}
_DEPLOY_FIELDS = {"gate_scores", "trigger"}


def check_params(step: str, params: Mapping[str, Any]) -> None:
    """Raise ValueError naming the first param ``step`` would refuse: the config loader calls
    this, so a misspelled param fails at start-up instead of in a run hours later."""
    if step == "deploy":
        unknown = sorted(set(params) - _DEPLOY_FIELDS)
        if unknown:
            raise ValueError(f"deploy takes no param {unknown[0]!r} (the rollout strategy and "
                             "canary settings live in `fleet.rollout`)")
        return
    policy = {k: v for k, v in params.items() if k in _POLICY_FIELDS}
    train = {k: v for k, v in params.items() if k in _TRAIN_FIELDS}
    unknown = sorted(set(params) - _POLICY_FIELDS - _TRAIN_FIELDS - _CONTEXT_FIELDS)
    if unknown:
        known = sorted(_POLICY_FIELDS | _TRAIN_FIELDS | _CONTEXT_FIELDS)
        raise ValueError(f"unknown param {unknown[0]!r}; {step} takes: {', '.join(known)}")
    ActionPolicy(**policy)
    TrainConfig(**train)


def context_of(inputs: StepInputs) -> StepContext:
    """A StepContext from the runner's inputs and the worker's environment."""
    policy: dict[str, Any] = {}
    train: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in inputs.params.items():
        if key in _POLICY_FIELDS:
            policy[key] = value
        elif key in _TRAIN_FIELDS:
            train[key] = value
        elif key in _CONTEXT_FIELDS:
            extra[key] = value
        else:
            raise PermanentStepError(f"step {inputs.step_name}: unknown param {key!r}",
                                     {"param": key})
    model_dir = inputs.artifacts.get("model") or inputs.champion_path
    if model_dir is None:
        raise PermanentStepError("no model to work on: neither an earlier step's model nor "
                                 "a champion")
    artifacts = Path(os.environ.get("LIFEGUARD_ARTIFACTS") or inputs.work_dir / "cache")
    threads = extra.get("threads") or int(os.environ.get("LIFEGUARD_THREADS", "0")) or None
    try:
        return StepContext(
            run_id=inputs.run_id, model_dir=Path(model_dir), output_dir=artifacts,
            snapshot=inputs.snapshot_path,
            reference=Path(extra["reference"]) if extra.get("reference") else None,
            champion_dir=inputs.champion_path,
            device=extra.get("device") or os.environ.get("LIFEGUARD_DEVICE", "auto"),  # type: ignore[arg-type]
            threads=threads, policy=ActionPolicy(**policy), train=TrainConfig(**train))
    except ValueError as exc:
        raise PermanentStepError(f"step {inputs.step_name}: {exc}") from None


def _adapt(name: str) -> Callable[[StepInputs], StepOutcome]:
    def step(inputs: StepInputs) -> StepOutcome:
        from actions.steps import run_step

        ctx = context_of(inputs)
        try:
            result = run_step(name, ctx)
        except GateFailed as exc:
            raise RunnerGateFailed(str(exc), exc.evidence) from None
        except ActionError as exc:
            if exc.retryable:
                raise RetryableStepError(f"{name}: {exc}") from None
            raise PermanentStepError(f"{name}: {exc}") from None
        return _outcome(name, result)

    step.__name__ = name
    return step


def _outcome(name: str, result: StepResult) -> StepOutcome:
    artifacts = {"model": result.model_dir, name: result.artifact_dir}
    evidence = {**_json_scalars(result.metrics), "cached": result.cached, "key": result.key}
    return StepOutcome.of(artifacts=artifacts, evidence=evidence)


def _json_scalars(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items()
            if isinstance(v, str | int | float | bool | type(None) | list | dict)}


fine_tune = _adapt("fine_tune")
evaluate = _adapt("evaluate")
export_onnx = _adapt("export_onnx")
quantize = _adapt("quantize")
prune = _adapt("prune")


def deploy(inputs: StepInputs) -> StepOutcome:
    """Publish the pipeline's model as a new repository version and roll it out; a canary is
    judged by the daemon's own windows through its canary-analysis endpoint."""
    from deploy.config import FleetConfig
    from deploy.errors import DeployError, RetryableDeployError
    from deploy.remote_judge import RemoteJudge
    from deploy.step import DeployRequest
    from deploy.step import deploy as deploy_version

    raw = os.environ.get("LIFEGUARD_FLEET")
    state = os.environ.get("LIFEGUARD_STATE")
    if not raw or not state:
        raise PermanentStepError("deploy needs a fleet: set `fleet:` in the daemon's config")
    fleet = FleetConfig.model_validate_json(raw)
    source = inputs.artifacts.get("model")
    if source is None:
        raise PermanentStepError("deploy needs an exported model from an earlier step")
    judge = None
    url = os.environ.get("LIFEGUARD_URL")
    if fleet.rollout.strategy == "canary":
        if not url:
            raise PermanentStepError("a canary needs the daemon's URL to be judged")
        judge = RemoteJudge(url, os.environ.get("LIFEGUARD_TOKEN"))
    gate = {k: float(v) for k, v in inputs.params.get("gate_scores", {}).items()}
    request = DeployRequest(model=inputs.model, source_dir=Path(source), run_id=inputs.run_id,
                            trigger=str(inputs.params.get("trigger", "")) or None,
                            gate_scores=gate)
    fence = None
    if os.environ.get("LIFEGUARD_FENCE"):  # the run's lease, from the runner
        from lifeguard.state.fencing import Fence
        fence = Fence(**json.loads(os.environ["LIFEGUARD_FENCE"]))
    try:
        result = deploy_version(request, fleet, state, judge, fence)
    except DeployError as exc:
        if isinstance(exc, RetryableDeployError):
            raise RetryableStepError(f"deploy: {exc}") from None
        raise PermanentStepError(f"deploy: {exc}") from None
    evidence = {"version": result.version, "from_version": result.from_version,
                "rollout_id": result.rollout_id, "outcome": result.outcome,
                "reason": result.reason, "resumed": result.resumed,
                "served": {k: v for k, v in result.served.items()}}
    status = StepStatus.ROLLED_BACK if result.outcome == "rolled_back" else StepStatus.OK
    return StepOutcome.of(artifacts={"deployed": Path(source)}, evidence=evidence,
                          status=status)


STEP_REFS = {name: f"actions.pipeline:{name}" for name in
             ("fine_tune", "evaluate", "export_onnx", "quantize", "prune", "deploy")}
