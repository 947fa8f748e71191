"""The reference serving replica: its settings and the app they assemble. Open Inference
Protocol v2 health, model ready, metadata and config are answered here; infer and a plain-text
endpoint (deploy.infer_api), Triton's repository extension — index, load, unload —
(deploy.repository_api), Triton's generate extension (deploy.generate_api) and
OpenAI-compatible /v1 endpoints (deploy.openai_api) for its generators are mounted from their
own modules. One InferenceEvent per request goes to Kafka — the fleet is the daemon's data
source."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import Field, SecretStr

from deploy.emitter import EventEmitter
from deploy.errors import DeployError
from deploy.generate_api import generate_router
from deploy.infer_api import infer_router
from deploy.openai_api import openai_router
from deploy.replica_metrics import ReplicaMetrics
from deploy.replica_responses import error_response
from deploy.repository import ModelRepository, parse_version, triton_config, validate_model_name
from deploy.repository_api import repository_router
from deploy.serving import ModelServer, ServingError
from lifeguard.asgi import BodyLimit
from lifeguard.config import StrictModel

log = logging.getLogger(__name__)


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
            return error_response(400, str(exc))
        return JSONResponse({"name": name, "ready": True})

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str | None = None) -> JSONResponse:
        try:
            slot = server.get(name, None if version is None else parse_version(version))
        except (ServingError, DeployError) as exc:
            return error_response(400, str(exc))
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
            return error_response(400, str(exc))
        return JSONResponse(triton_config(name, slot.task, slot.version,
                                          getattr(slot.model.info, "kv_cache", None)))

    # Included after the metadata routes, in the order they were always matched.
    app.include_router(infer_router(server, emitter.emit, metrics.observe,
                                    settings.replica_name))
    app.include_router(repository_router(server, repository, settings.control_token,
                                         settings.host))
    return app


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
