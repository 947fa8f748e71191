"""Triton's repository extension on the replica (explicit model control): ``index``, ``load``
and ``unload``. Load and unload answer only the control token's holder (or, with none
configured, a replica on loopback); a load's version comes from Triton's config override, whose
tensors must be the version's own."""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import SecretStr

from deploy.replica_responses import error_response
from deploy.repository import ModelRepository, config_mismatch, parse_version, validate_model_name
from deploy.serving import ModelServer, ServingError

log = logging.getLogger(__name__)
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _control_refusal(control_token: SecretStr | None, host: str,
                     request: Request) -> JSONResponse | None:
    """Who may load or unload: the holder of the control token; with none configured, only a
    replica bound to loopback answers (anyone reaching it could unload the model otherwise)."""
    expected = control_token
    if expected is None:
        if host in _LOOPBACK:
            return None
        return error_response(401, "no control token configured on this replica: "
                              "load/unload refused")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), expected.get_secret_value().encode()):
        return None
    return error_response(401, "missing or wrong bearer token for the repository API")


def repository_router(server: ModelServer, repository: ModelRepository,
                      control_token: SecretStr | None, host: str) -> APIRouter:
    router = APIRouter()

    @router.post("/v2/repository/index")
    async def index(request: Request) -> JSONResponse:
        raw = await request.body()
        only_ready = bool(json.loads(raw).get("ready", False)) if raw else False
        entries = []
        for name in sorted(set(repository.models()) | set(server.loaded)):
            slot = server.loaded.get(name)
            if slot is not None:
                entries.append({"name": name, "version": str(slot.version), "state": "READY"})
            if only_ready:
                continue
            entries.extend({"name": name, "version": str(v), "state": "UNAVAILABLE",
                            "reason": "unloaded"}
                           for v in repository.versions(name) if slot is None or v != slot.version)
        return JSONResponse(entries)

    @router.post("/v2/repository/models/{name}/load")
    async def load(name: str, request: Request) -> JSONResponse:
        refused = _control_refusal(control_token, host, request)
        if refused is not None:
            return refused
        try:
            raw = await request.body()
            body = json.loads(raw) if raw else {}
            parameters = body.get("parameters") or {}
            version = _requested_version(parameters)
            _check_override(server.repository, validate_model_name(name), version, parameters)
            slot = await server.load(name, version)
        except Exception as exc:  # the old version keeps serving; the caller learns why
            log.warning("load of %s failed: %r", name, exc)
            return error_response(400, f"failed to load '{name}': {type(exc).__name__}: {exc}")
        return JSONResponse({"name": name, "version": str(slot.version)})

    @router.post("/v2/repository/models/{name}/unload")
    async def unload(name: str, request: Request) -> JSONResponse:
        refused = _control_refusal(control_token, host, request)
        if refused is not None:
            return refused
        try:
            server.unload(name)
        except ServingError as exc:
            return error_response(400, str(exc))
        return JSONResponse({})

    return router


def _check_override(repository: ModelRepository, name: str, version: int | None,
                    parameters: dict[str, Any]) -> None:
    """Refuse a config override whose tensors are not the version's own, as Triton's ONNX
    backend does (a KV-cache graph's load config must list its past and present tensors)."""
    if "config" not in parameters:
        return
    config = parameters["config"]
    config = json.loads(config) if isinstance(config, str) else config
    number = version if version is not None else repository.serving_version(name)
    if number is None:
        return  # nothing to compare with: server.load says why
    problem = config_mismatch(config, repository.record(name, number).triton_config())
    if problem is not None:
        raise ServingError(problem)


def _requested_version(parameters: dict[str, Any]) -> int | None:
    """Triton picks the version through a config override's version_policy; accept that, or a
    plain ``version`` parameter. None means the latest version."""
    if "config" in parameters:
        config = parameters["config"]
        config = json.loads(config) if isinstance(config, str) else config
        policy = config.get("version_policy") or {}
        if "specific" in policy:
            versions = policy["specific"].get("versions") or []
            if len(versions) != 1:
                raise ValueError("this replica serves one version per model: give exactly one")
            return parse_version(versions[0] if isinstance(versions[0], int)
                                 else str(versions[0]))
        if "all" in policy:
            raise ValueError("version_policy 'all' is not supported: one version per model")
    if "version" in parameters:
        return parse_version(str(parameters["version"]))
    return None
