"""The canary-analysis endpoint, for an external progressive-delivery controller: GET
``/canary/{model}`` answers stable vs canary metrics and a verdict as JSON.

Argo Rollouts' web metric provider reads it with, for example::

    provider: {web: {url: "http://lifeguard:8080/canary/sentiment", jsonPath: "{$}"}}
    successCondition: result.verdict == "healthy"
    failureCondition: result.verdict == "unhealthy"

(``insufficient`` matches neither, which Argo counts as inconclusive.)
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query

from deploy.repository import validate_model_name
from deploy.rollout_store import RolloutStore
from deploy.verdict import CanaryQuery, Judge


def canary_analysis_router(judge: Judge, store: RolloutStore | None = None,
                           prefix: str = "/canary") -> APIRouter:
    """An APIRouter the daemon mounts; versions come from the query, else from the model's
    active rollout in ``store``."""
    router = APIRouter(prefix=prefix, tags=["canary analysis"])

    @router.get("/{model}")
    def analysis(model: str, canary: int | None = Query(None, ge=1),
                 stable: int | None = Query(None, ge=1),
                 since: float | None = Query(None, ge=0)) -> dict[str, object]:
        try:
            validate_model_name(model)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        rollout_id = None
        if canary is None:
            record = store.active(model) if store is not None else None
            if record is None:
                raise HTTPException(404, f"no canary in progress for {model}; pass ?canary=N")
            canary, stable, rollout_id = record.to_version, record.from_version, record.id
            since = since if since is not None else (record.canary_since or record.created_at)
        query = CanaryQuery(model, canary, stable, since or 0.0)
        verdict = judge(query)
        return {"model": model, "canary_version": canary, "stable_version": stable,
                "rollout_id": rollout_id, "since": query.since_s,
                "value": {"healthy": 1, "unhealthy": 0}.get(verdict.state),
                **verdict.as_dict()}

    return router
