"""The deploy step: publish the run's model as a new repository version and roll it out with
``deploy.step`` (a canary judged by the daemon's own windows through its canary analysis)."""

from __future__ import annotations

from pathlib import Path

from actions.contract import StepContext, StepResult, StepStatus
from actions.errors import BadInput, PermanentStepError, RetryableStepError


def run(ctx: StepContext) -> StepResult:
    """Params: ``gate_scores`` (recorded with the version) and ``trigger``. A failed canary
    is rolled back and returns status rolled_back; the run ends there."""
    from deploy.errors import DeployError, RetryableDeployError
    from deploy.remote_judge import RemoteJudge
    from deploy.step import DeployRequest, deploy

    target = ctx.deploy
    if target is None:
        raise BadInput("deploy needs a fleet: set `fleet:` in the daemon's config")
    source = ctx.artifacts.get("model")
    if source is None:
        raise BadInput("deploy needs an exported model from an earlier step")
    judge = None
    if target.fleet.rollout.strategy == "canary":
        if not target.api_url:
            raise BadInput("a canary needs the daemon's URL to be judged")
        token = target.token.get_secret_value() if target.token is not None else None
        judge = RemoteJudge(target.api_url, token)
    gate = {k: float(v) for k, v in ctx.params.get("gate_scores", {}).items()}
    request = DeployRequest(model=ctx.model, source_dir=Path(source), run_id=ctx.run_id,
                            trigger=str(ctx.params.get("trigger", "")) or None,
                            gate_scores=gate)
    try:
        result = deploy(request, target.fleet, target.state_url or target.state_path, judge,
                        target.fence)
    except RetryableDeployError as exc:
        raise RetryableStepError(f"deploy: {exc}") from None
    except DeployError as exc:
        raise PermanentStepError(f"deploy: {exc}") from None
    evidence = {"version": result.version, "from_version": result.from_version,
                "rollout_id": result.rollout_id, "outcome": result.outcome,
                "reason": result.reason, "resumed": result.resumed,
                "served": dict(result.served)}
    status = StepStatus.ROLLED_BACK if result.outcome == "rolled_back" else StepStatus.OK
    return StepResult.of(artifacts={"deployed": Path(source)}, evidence=evidence,
                         status=status)
