"""The control API (``/api/v1``): status per model, evaluations, runs, audit; approve/reject a
run, pause/resume a model, and the Alertmanager webhook. Mounted beside /metrics by daemon.http.

Reads are open (like /metrics), a failed step's traceback and log tail excepted (redacted
without the on-call token). On-call mutations need ``Authorization: Bearer <token>`` and
the webhook its own ``<webhook_token>``: neither credential opens the other's endpoints, and the
audit's actor is the credential's (``oncall``, ``alertmanager``), never what a client declares.
With no token configured the endpoints it guards are refused, never open. A bad body gets 400
with the reason, and nothing changes.
"""

from __future__ import annotations

import hmac
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool

from daemon.act.alerts import AlertPayloadError, handle_webhook, parse_webhook
from daemon.act.config import AlertsConfig
from daemon.act.policy import PolicyEngine
from daemon.act.runs import ACTIVE, ActionRun, RunState
from daemon.act.store import StateStore
from daemon.monitor.evaluation import Evaluation

PREFIX = "/api/v1"
ONCALL = "oncall"
ALERTMANAGER = "alertmanager"
# What a client says about itself (the CLI sends ``cli:<user>``): kept as evidence, not trusted.
_DECLARED_HEADER = "X-Lifeguard-Actor"


def _finite(value: float | None) -> float | None:
    """JSON has no NaN: a statistic or threshold that is not a number reads as null."""
    return value if value is None or math.isfinite(value) else None


def evaluation_json(ev: Evaluation, with_results: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": ev.id, "model": ev.model, "model_version": ev.model_version, "ts": ev.ts,
        "window_end_offset": ev.window_end_offset, "breached": ev.breached,
        "breaches": [{"key": r.key, "statistic": _finite(r.statistic),
                      "threshold": _finite(r.threshold), "direction": r.direction,
                      "n_reference": r.n_reference, "n_current": r.n_current,
                      "method": r.method} for r in ev.breaches],
    }
    if with_results:
        out["results"] = [{"key": r.key, "statistic": _finite(r.statistic),
                           "threshold": _finite(r.threshold),
                           "direction": r.direction, "verdict": r.verdict.value,
                           "n_reference": r.n_reference, "n_current": r.n_current,
                           "method": r.method} for r in ev.results]
    return out


# What a failing step leaves in its evidence that is for on-call's eyes only: a traceback or
# the worker log's tail names paths, hosts and data. Open reads get it redacted.
_PRIVATE = frozenset({"traceback", "log_tail", "log"})


def _redacted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "(redacted: send the on-call token)" if k in _PRIVATE else _redacted(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


def trigger_evaluations(store: StateStore, run: ActionRun,
                        reference: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The evaluations that triggered ``run`` (oldest first), each with its breached detectors'
    numbers and the reference its current window was compared against."""
    ids = run.evidence.get("evaluation_ids")
    out = []
    for evaluation_id in ids if isinstance(ids, list) else []:
        ev = store.get_evaluation(str(evaluation_id))
        if ev is None:
            out.append({"id": evaluation_id, "missing": True})
            continue
        described = dict(reference or {})
        if described.get("kind") == "first_n":
            described["version"] = ev.model_version  # each version is judged on its own
        out.append({**evaluation_json(ev), "reference": described})
    return sorted(out, key=lambda e: (e.get("ts") or 0.0, e.get("window_end_offset") or 0))


def _run_summary(run: ActionRun) -> dict[str, Any]:
    return {"id": run.id, "model": run.model, "pipeline": run.pipeline, "state": run.state.value,
            "source": run.source, "mode": run.mode, "step": run.next_step,
            "n_steps": run.n_steps, "created_at": run.created_at, "updated_at": run.updated_at,
            "error": run.error}


def create_router(
    store: StateStore,
    engine: PolicyEngine,
    token: str | None,
    alert_labels: AlertsConfig | None = None,
    on_change: Callable[[], None] | None = None,
    deployed_version: Callable[[str], str | None] | None = None,
    references: Mapping[str, Mapping[str, Any]] | None = None,
    webhook_token: str | None = None,
) -> APIRouter:
    """``token`` guards on-call actions, ``webhook_token`` the Alertmanager webhook (each
    None = refused); ``on_change`` is called after an approval or resume (the runner's
    ``wake``); ``deployed_version(model)`` answers what the fleet serves, when known;
    ``references[model]`` describes what the model's windows are compared against."""
    references = dict(references or {})
    labels = alert_labels or AlertsConfig()
    router = APIRouter(prefix=PREFIX)

    def check_bearer(request: Request, expected: str | None, what: str) -> None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if not expected:
            raise HTTPException(401, f"no {what} token configured on the daemon: refused",
                                headers={"WWW-Authenticate": "Bearer"})
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                                 expected.encode()):
            raise HTTPException(401, "missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    def authorized(request: Request) -> str:
        check_bearer(request, token, "API")
        return ONCALL

    def is_oncall(request: Request) -> bool:
        try:
            check_bearer(request, token, "API")
        except HTTPException:
            return False
        return True

    def webhook_authorized(request: Request) -> str:
        check_bearer(request, webhook_token, "webhook")
        return ALERTMANAGER

    def declared(request: Request, body: dict[str, Any]) -> dict[str, str]:
        who = body.get("actor") or request.headers.get(_DECLARED_HEADER)
        return {"declared_by": who[:200]} if who else {}

    async def body_object(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HTTPException(400, f"body is not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise HTTPException(400, "body must be a JSON object")
        unknown = sorted(set(value) - {"reason", "actor"})
        if unknown:
            raise HTTPException(400, f"unknown field(s): {', '.join(unknown)}")
        for key in ("reason", "actor"):
            if key in value and not isinstance(value[key], str):
                raise HTTPException(400, f"{key} must be a string")
        return value

    def changed() -> None:
        if on_change is not None:
            on_change()

    @router.get("/status")
    def status() -> dict[str, Any]:
        paused = store.paused_models()
        models = sorted(set(engine.policies) | set(store.models()))
        out = []
        for model in models:
            policy = engine.policies.get(model)
            last = store.list_evaluations(model=model, limit=1)
            active = store.list_runs(model=model, states=ACTIVE, limit=1)
            last_run = store.list_runs(model=model, limit=1)
            deployed = deployed_version(model) if deployed_version else None
            out.append({
                "model": model,
                "mode": policy.mode.value if policy else None,
                "pipeline": policy.pipeline if policy else None,
                "paused": paused.get(model),
                "last_evaluation": evaluation_json(last[0]) if last else None,
                "active_run": _run_summary(active[0]) if active else None,
                "last_run": _run_summary(last_run[0]) if last_run else None,
                "deployed_version": deployed or (last[0].model_version if last else None),
            })
        return {"models": out}

    @router.get("/evaluations")
    def evaluations(model: str | None = None,
                    limit: int = Query(50, ge=1, le=1000)) -> dict[str, Any]:
        return {"evaluations": [evaluation_json(e) for e in store.list_evaluations(model, limit)]}

    @router.get("/evaluations/{evaluation_id}")
    def evaluation(evaluation_id: str) -> dict[str, Any]:
        ev = store.get_evaluation(evaluation_id)
        if ev is None:
            raise HTTPException(404, f"no evaluation {evaluation_id}")
        return evaluation_json(ev, with_results=True)

    @router.get("/runs")
    def runs(model: str | None = None, state: str | None = None,
             limit: int = Query(100, ge=1, le=1000),
             id_prefix: str | None = Query(None, min_length=1, description=(
                 "Only runs whose id starts with this (how the CLI resolves a short id)."))
             ) -> dict[str, Any]:
        try:
            states = [RunState(s) for s in state.split(",")] if state else None
        except ValueError as exc:
            raise HTTPException(400, f"unknown state: {exc}") from exc
        return {"runs": [_run_summary(r) for r in store.list_runs(model, states, limit,
                                                                   id_prefix=id_prefix)]}

    @router.get("/runs/{run_id}")
    def run_detail(run_id: str, request: Request) -> dict[str, Any]:
        run = store.get_run(run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id}")
        out = {**run.to_json(), "step_records": [s.to_json() for s in store.steps(run_id)],
               "evaluations": trigger_evaluations(store, run, references.get(run.model)),
               "transitions": [t.to_json() for t in store.transitions(run_id)],
               "audit": [a.to_json() for a in store.list_audit(run_id=run_id)]}
        return out if is_oncall(request) else _redacted(out)  # type: ignore[no-any-return]

    @router.get("/audit")
    def audit(request: Request, since: float | None = None, model: str | None = None,
              run: str | None = None, limit: int = Query(200, ge=1, le=5000)) -> dict[str, Any]:
        entries = store.list_audit(since=since, model=model, run_id=run, limit=limit)
        out = {"entries": [a.to_json() for a in entries]}
        return out if is_oncall(request) else _redacted(out)  # type: ignore[no-any-return]

    def _decide(run_id: str, to: RunState, allowed: list[RunState], actor: str,
                body: dict[str, Any], note: dict[str, str]) -> dict[str, Any]:
        run = store.get_run(run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id}")
        evidence = {**note, **({"reason": body["reason"]} if body.get("reason") else {})}
        if not store.transition(run_id, to, actor, allowed, evidence):
            current = store.get_run(run_id)
            state = current.state.value if current else "gone"
            raise HTTPException(409, f"run {run_id} is {state}; cannot move it to {to.value}")
        changed()
        return {"id": run_id, "state": to.value, "actor": actor}

    @router.post("/runs/{run_id}/approve")
    async def approve(run_id: str, request: Request,
                      actor: str = Depends(authorized)) -> dict[str, Any]:
        body = await body_object(request)
        return await run_in_threadpool(_decide, run_id, RunState.QUEUED,
                                       [RunState.PENDING_APPROVAL], actor, body,
                                       declared(request, body))

    @router.post("/runs/{run_id}/reject")
    async def reject(run_id: str, request: Request,
                     actor: str = Depends(authorized)) -> dict[str, Any]:
        body = await body_object(request)
        return await run_in_threadpool(_decide, run_id, RunState.REJECTED,
                                       [RunState.PENDING_APPROVAL, RunState.QUEUED], actor, body,
                                       declared(request, body))

    @router.post("/models/{model}/pause")
    async def pause(model: str, request: Request,
                    actor: str = Depends(authorized)) -> dict[str, Any]:
        body = await body_object(request)
        was_new = await run_in_threadpool(store.pause, model, actor,
                                          body.get("reason", ""))
        return {"model": model, "paused": True, "changed": was_new}

    @router.post("/models/{model}/resume")
    async def resume(model: str, request: Request,
                     actor: str = Depends(authorized)) -> dict[str, Any]:
        await body_object(request)  # validated all the same: a bad body changes nothing
        was_paused = await run_in_threadpool(store.resume, model, actor)
        changed()
        return {"model": model, "paused": False, "changed": was_paused}

    @router.post("/alerts")
    async def alerts(request: Request,
                     actor: str = Depends(webhook_authorized)) -> dict[str, Any]:
        try:
            payload = parse_webhook(await request.body())
        except AlertPayloadError as exc:
            raise HTTPException(400, str(exc)) from exc
        # Off the event loop: the policy may capture a data snapshot for a new run.
        result = await run_in_threadpool(handle_webhook, payload, store, engine, labels)
        if result.runs_created:
            changed()
        return result.to_json()

    return router
