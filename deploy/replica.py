"""The reference serving replica: Open Inference Protocol v2 over HTTP (health, model ready,
metadata, infer), Triton's repository extension (index, load, unload), a plain-text endpoint,
Triton's generate extension (deploy.generate_api) and OpenAI-compatible /v1 endpoints
(deploy.openai_api) for its generators, and one InferenceEvent per request to Kafka — the fleet
is the daemon's data source."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import Field, SecretStr

from daemon.events import InferenceEvent, Output
from deploy.batching import QueueFull
from deploy.emitter import EventEmitter
from deploy.errors import DeployError
from deploy.generate_api import generate_router
from deploy.oip_binary import HEADER as BINARY_HEADER
from deploy.oip_binary import read_request, write_response
from deploy.openai_api import openai_router
from deploy.replica_metrics import ReplicaMetrics
from deploy.repository import (
    ModelRepository,
    config_mismatch,
    parse_version,
    triton_config,
    validate_model_name,
)
from deploy.serving import ModelServer, Prediction, ServingError
from lifeguard.asgi import BodyLimit
from lifeguard.config import StrictModel

log = logging.getLogger(__name__)
REQUEST_ID_HEADER = "x-request-id"


class ReplicaSettings(StrictModel):
    repository: Path
    models: list[str] = Field(default_factory=list, description="NAME or NAME:VERSION")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    name: str | None = None
    kafka: str | None = None
    topic: str = "inference"
    sample_rate: float = Field(default=1.0, ge=0, le=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(default=1, ge=1)
    workers: int = Field(default=1, ge=1)
    max_batch: int = Field(default=16, ge=1)
    batch_wait_ms: float = Field(default=0.0, ge=0)
    max_queue: int = Field(default=1024, ge=1,
                           description="Requests waiting for a batch, per model; past it 503.")
    max_body_bytes: int = Field(default=4 << 20, ge=1024,
                                description="Larger request bodies are answered 413.")
    control_token: SecretStr | None = Field(
        default=None, min_length=16,
        description="Bearer token the repository API (load/unload) requires; unset: that API "
        "answers only on a loopback address.")

    @property
    def replica_name(self) -> str:
        return self.name or f"{self.host}:{self.port}"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _overloaded(exc: QueueFull) -> JSONResponse:
    """The batch queue is full: shed the request, and say when to come back."""
    return JSONResponse({"error": f"overloaded: {exc}"}, status_code=503,
                        headers={"Retry-After": str(exc.retry_after_s)})


def _control_refusal(settings: ReplicaSettings, request: Request) -> JSONResponse | None:
    """Who may load or unload: the holder of the control token; with none configured, only a
    replica bound to loopback answers (anyone reaching it could unload the model otherwise)."""
    expected = settings.control_token
    if expected is None:
        if settings.host in _LOOPBACK:
            return None
        return _error(401, "no control token configured on this replica: load/unload refused")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), expected.get_secret_value().encode()):
        return None
    return _error(401, "missing or wrong bearer token for the repository API")


def create_app(settings: ReplicaSettings) -> FastAPI:
    repository = ModelRepository(settings.repository)
    emitter = EventEmitter(settings.kafka, settings.topic, settings.sample_rate)
    registry = CollectorRegistry()
    server: ModelServer
    metrics = ReplicaMetrics(registry, emitter.stats,
                             lambda: {n: s.version for n, s in server.loaded.items()})
    server = ModelServer(repository, settings.device, settings.threads, settings.workers,
                         settings.max_batch, settings.batch_wait_ms / 1000,
                         on_batch=metrics.batch_size.observe, max_queue=settings.max_queue)
    startup_models = [_parse_model_spec(spec) for spec in settings.models]
    state: dict[str, object] = {"ready": not startup_models, "startup_error": None}

    async def load_startup_models() -> None:
        try:
            for name, version in startup_models:
                await server.load(name, version)
            state["ready"] = True
        except Exception as exc:  # not ready, and says why; live stays up for inspection
            state["startup_error"] = repr(exc)
            log.error("startup load failed: %r", exc)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(load_startup_models())
        yield
        task.cancel()
        await server.close()
        emitter.close()

    app = FastAPI(title="lifeguard replica", lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)  # type: ignore[arg-type]
    app.state.server = server
    app.state.emitter = emitter
    app.include_router(openai_router(server, emitter.emit, metrics.observe,
                                     settings.replica_name))
    app.include_router(generate_router(server, emitter.emit, metrics.observe,
                                       settings.replica_name))

    def log_event(slot_name: str, request_id: str, text: str, started: float,
                  prediction: Prediction | None, error: str | None, version: int | None) -> None:
        metrics.observe(slot_name, version, error is None, time.perf_counter() - started)
        output = None
        if prediction is not None:
            output = Output(label=prediction.label, score=prediction.score,
                            text=prediction.text)
        emitter.emit(InferenceEvent(
            request_id=request_id, ts=time.time() * 1000, model=slot_name,
            model_version=str(version if version is not None else "unknown"),
            latency_ms=(time.perf_counter() - started) * 1000,
            replica=settings.replica_name, status="error" if error else "ok", error=error,
            input={"text": text}, output=output))

    async def predict_logged(name: str, text: str, request_id: str, version: int | None,
                             max_new_tokens: int) -> Prediction:
        started = time.perf_counter()
        try:
            prediction = await server.predict(name, text, version, max_new_tokens)
        except (ServingError, QueueFull):
            raise  # the request was wrong or shed, not the model's fault: no inference ran
        except Exception as exc:
            slot = server.loaded.get(name)
            log_event(name, request_id, text, started, None, repr(exc),
                      slot.version if slot else None)
            raise
        log_event(name, request_id, text, started, prediction, None, prediction.version)
        return prediction

    # --- health and metadata --------------------------------------------------------------

    @app.get("/v2/health/live")
    async def live() -> JSONResponse:
        return JSONResponse({"live": True})

    @app.get("/v2/health/ready")
    async def ready() -> JSONResponse:
        ok = bool(state["ready"])
        body = {"ready": ok, "error": state["startup_error"]}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v2")
    async def server_metadata() -> JSONResponse:
        return JSONResponse({"name": "lifeguard-replica", "version": "1",
                             "extensions": ["model_repository", "generate", "lifeguard_text"]})

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None) -> JSONResponse:
        try:
            server.get(name, None if version is None else parse_version(version))
        except (ServingError, DeployError) as exc:
            return _error(400, str(exc))
        return JSONResponse({"name": name, "ready": True})

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str | None = None) -> JSONResponse:
        try:
            slot = server.get(name, None if version is None else parse_version(version))
        except (ServingError, DeployError) as exc:
            return _error(400, str(exc))
        logits_shape = [-1, -1] if slot.task == "sequence-classification" else [-1, -1, -1]
        return JSONResponse({
            "name": name, "versions": [str(slot.version)], "platform": "onnxruntime_onnx",
            "inputs": [{"name": n, "datatype": "INT64", "shape": [-1, -1]}
                       for n in ("input_ids", "attention_mask")]
            + [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": logits_shape}],
            "parameters": {"task": slot.task, "labels": list(slot.labels),
                           "providers": list(getattr(slot.model, "providers", []))},
        })

    @app.get("/v2/models/{name}/config")
    @app.get("/v2/models/{name}/versions/{version}/config")
    async def model_config(name: str, version: str | None = None) -> JSONResponse:
        """Triton's model configuration (JSON form of ModelConfig) of the served version."""
        try:
            slot = server.get(name, None if version is None else parse_version(version))
        except (ServingError, DeployError) as exc:
            return _error(400, str(exc))
        return JSONResponse(triton_config(name, slot.task, slot.version,
                                          getattr(slot.model.info, "kv_cache", None)))

    # --- inference ------------------------------------------------------------------------

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str | None = None) -> Response:
        try:  # JSON, or tritonclient's binary tensors (deploy.oip_binary)
            body = read_request(await request.body(), request.headers.get(BINARY_HEADER))
            pinned = None if version is None else parse_version(version)
            inputs = {i["name"]: i for i in body["inputs"]}
            request_id = str(body.get("id") or request.headers.get(REQUEST_ID_HEADER)
                             or uuid.uuid4().hex)
            max_new = int((body.get("parameters") or {}).get("max_new_tokens", 16))
            if "text" in inputs:
                outputs, served = await _infer_text(name, inputs["text"]["data"], request_id,
                                                    pinned, max_new)
            elif "input_ids" in inputs:
                outputs, served = await _infer_tensors(name, inputs, pinned)
            else:
                raise ServingError("inputs must include 'text' or 'input_ids'")
            content, headers = write_response(
                {"model_name": name, "model_version": str(served), "id": request_id,
                 "outputs": outputs}, body)
        except QueueFull as exc:
            return _overloaded(exc)
        except (ServingError, DeployError, KeyError, TypeError, ValueError) as exc:
            return _error(400, f"{type(exc).__name__}: {exc}")
        except Exception as exc:
            return _error(500, repr(exc))
        return Response(content, headers={**headers, REQUEST_ID_HEADER: request_id})

    async def _infer_text(name: str, texts: list[Any], request_id: str, pinned: int | None,
                          max_new: int) -> tuple[list[dict[str, Any]], int]:
        if not texts or not all(isinstance(t, str) for t in texts):
            raise ServingError("'text' must be a non-empty list of strings")
        ids = [request_id] if len(texts) == 1 else [f"{request_id}-{i}" for i in range(len(texts))]
        answers = await asyncio.gather(*(predict_logged(name, t, rid, pinned, max_new)
                                         for t, rid in zip(texts, ids, strict=True)))
        n = [len(answers)]
        if answers[0].text is not None:
            return [{"name": "text", "datatype": "BYTES", "shape": n,
                     "data": [a.text for a in answers]}], answers[0].version
        return [{"name": "label", "datatype": "BYTES", "shape": n,
                 "data": [a.label for a in answers]},
                {"name": "score", "datatype": "FP32", "shape": n,
                 "data": [a.score for a in answers]}], answers[0].version

    async def _infer_tensors(name: str, inputs: dict[str, Any],
                             pinned: int | None) -> tuple[list[dict[str, Any]], int]:
        ids = np.asarray(inputs["input_ids"]["data"], dtype=np.int64)
        ids = ids.reshape(inputs["input_ids"]["shape"])
        for tensor_name, spec in inputs.items():
            # a KV-cache graph's first step (empty past) is answered in full; a later step
            # would need the cache this replica keeps per request, not per call
            shape = spec.get("shape") or []
            if tensor_name.startswith("past_key_values.") and (len(shape) != 4 or shape[2]):
                raise ServingError(f"'{tensor_name}' must be an empty past [batch, heads, 0, "
                                   f"head_dim]: this replica runs whole sequences, got {shape}")
        mask_spec = inputs.get("attention_mask")
        mask = (np.ones_like(ids) if mask_spec is None
                else np.asarray(mask_spec["data"], dtype=np.int64).reshape(mask_spec["shape"]))
        served, logits = await server.run_tensors(name, ids, mask, pinned)
        return [{"name": "logits", "datatype": "FP32", "shape": list(logits.shape),
                 "data": logits.astype(np.float32).ravel().tolist()}], served

    @app.post("/v2/models/{name}/text")
    @app.post("/v2/models/{name}/versions/{version}/text")
    async def text(name: str, request: Request, version: str | None = None) -> JSONResponse:
        """Raw text in (text/plain body, or JSON {"text", "request_id", "max_new_tokens"})."""
        raw = await request.body()
        request_id = request.headers.get(REQUEST_ID_HEADER)
        max_new = 16
        try:
            if request.headers.get("content-type", "").startswith("application/json"):
                body = json.loads(raw)
                content = body["text"]
                request_id = body.get("request_id") or request_id
                max_new = int(body.get("max_new_tokens", max_new))
            else:
                content = raw.decode()
            if not isinstance(content, str):
                raise ServingError("'text' must be a string")
            request_id = request_id or uuid.uuid4().hex
            pinned = None if version is None else parse_version(version)
            answer = await predict_logged(name, content, request_id, pinned, max_new)
        except QueueFull as exc:
            return _overloaded(exc)
        except (ServingError, DeployError, KeyError, ValueError) as exc:
            return _error(400, f"{type(exc).__name__}: {exc}")
        except Exception as exc:
            return _error(500, repr(exc))
        result: dict[str, Any] = {"model_name": name, "model_version": str(answer.version),
                                  "request_id": request_id}
        if answer.text is not None:
            result["text"] = answer.text
        else:
            result.update(label=answer.label, score=answer.score)
        return JSONResponse(result, headers={REQUEST_ID_HEADER: request_id})

    # --- repository extension (Triton explicit model control) -----------------------------

    @app.post("/v2/repository/index")
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

    @app.post("/v2/repository/models/{name}/load")
    async def load(name: str, request: Request) -> JSONResponse:
        refused = _control_refusal(settings, request)
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
            return _error(400, f"failed to load '{name}': {type(exc).__name__}: {exc}")
        return JSONResponse({"name": name, "version": str(slot.version)})

    @app.post("/v2/repository/models/{name}/unload")
    async def unload(name: str, request: Request) -> JSONResponse:
        refused = _control_refusal(settings, request)
        if refused is not None:
            return refused
        try:
            server.unload(name)
        except ServingError as exc:
            return _error(400, str(exc))
        return JSONResponse({})

    return app


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


def _parse_model_spec(spec: str) -> tuple[str, int | None]:
    name, _, version = spec.partition(":")
    return validate_model_name(name), (parse_version(version) if version else None)


def serve(settings: ReplicaSettings) -> None:
    """Run the replica until SIGINT/SIGTERM (uvicorn finishes requests in flight first)."""
    import uvicorn

    # Bounded like the daemon's API: 256 connections at once (503 past it), 16 KiB heads.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level="warning", access_log=False, timeout_graceful_shutdown=5,
                limit_concurrency=256, timeout_keep_alive=5,
                h11_max_incomplete_event_size=16 * 1024)
