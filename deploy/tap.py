"""``lifeguard tap``: a reverse proxy in front of any OpenAI-compatible server that passes every
answer through as the upstream sent it and writes one InferenceEvent per request to Kafka.

Events go through the replica's bounded emitter: a slow or absent broker drops events (counted
on the tap's /metrics), never a request. The only change made to a request is asking for usage
on streams (``stream_options.include_usage``) when the client did not, so tokens are counted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import Field, field_validator
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from daemon.events import EventError
from deploy.emitter import EventEmitter
from deploy.tap_events import (
    Answer,
    Content,
    Privacy,
    StreamReader,
    feedback_event,
    inference_event,
    read_answer,
)
from deploy.tap_metrics import TapMetrics
from lifeguard.config import StrictModel

log = logging.getLogger(__name__)
REQUEST_ID_HEADER = "x-request-id"
VERSION_HEADER = "x-model-version"
# Hop-by-hop headers (RFC 9110 §7.6.1) and those the tap recomputes.
_DROP_REQUEST = {"host", "content-length", "connection", "keep-alive", "transfer-encoding",
                 "te", "upgrade", "proxy-connection", "accept-encoding"}
_DROP_RESPONSE = {"content-length", "connection", "keep-alive", "transfer-encoding", "te",
                  "upgrade", "proxy-connection", "content-encoding"}
_REMEMBERED = 100_000  # request ids whose model is kept for feedback that names no model


class TapSettings(StrictModel):
    upstream: str = Field(description="Base URL of the OpenAI-compatible server.")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    kafka: str | None = None
    topic: str = "inference"
    model_version: str | None = Field(
        default=None, description="Version written in events when the upstream does not send "
                                  "an x-model-version header.")
    name: str | None = Field(default=None, description="Replica name in events "
                                                       "(default: the upstream's host:port).")
    content: Content = "full"
    max_content_chars: int = Field(default=2000, ge=1)
    buffer: int = Field(default=10_000, ge=1, description="Events held while Kafka is slow.")
    kafka_timeout_s: float = Field(default=30.0, ge=1)
    stream_usage: bool = True
    timeout_s: float = Field(default=600.0, gt=0)

    @field_validator("upstream")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"upstream must be an http(s) URL, got {value!r}")
        return value.rstrip("/")

    @property
    def replica_name(self) -> str:
        return self.name or urlsplit(self.upstream).netloc

    @property
    def privacy(self) -> Privacy:
        return Privacy(self.content, self.max_content_chars)


def create_app(settings: TapSettings) -> Starlette:
    emitter = EventEmitter(settings.kafka, settings.topic, queue_size=settings.buffer,
                           delivery_timeout_s=settings.kafka_timeout_s)
    registry = CollectorRegistry()
    metrics = TapMetrics(registry, emitter)
    privacy = settings.privacy
    upstream = httpx.AsyncClient(
        timeout=httpx.Timeout(settings.timeout_s, connect=10.0),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=256))
    models_of: OrderedDict[str, str] = OrderedDict()

    def record(route: str, request_id: str, body: dict[str, Any], answer: Answer,
               started: float, version: str, error: str | None,
               ended: float | None = None) -> None:
        """Never raises: the user's answer is already on its way."""
        ended = time.perf_counter() if ended is None else ended
        metrics.observe(route, error is None, ended - started)
        model = str(body.get("model") or answer.model or "unknown")
        try:
            emitter.emit(inference_event(
                request_id=request_id, model=model, version=version,
                replica=settings.replica_name, body=body, answer=answer, started=started,
                ended=ended, error=error, privacy=privacy))
        except Exception as exc:
            metrics.unrecorded.inc()
            log.warning("tap: could not record %s: %r", request_id, exc)
        models_of[request_id] = model
        if len(models_of) > _REMEMBERED:
            models_of.popitem(last=False)

    async def generate(request: Request) -> Response:
        started = time.perf_counter()
        route = request.scope["path"]
        raw = await request.body()
        request_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {}
        streamed = body.get("stream") is True
        sent = raw
        if streamed and settings.stream_usage and "include_usage" not in (
                body.get("stream_options") or {}):
            sent = json.dumps({**body, "stream_options": {
                **(body.get("stream_options") or {}), "include_usage": True}}).encode()
        headers = _forward(request.headers, _DROP_REQUEST)
        headers[REQUEST_ID_HEADER] = request_id
        headers["accept-encoding"] = "identity"  # the tap reads what it passes on
        # A ready URL: httpx merging a base URL and params costs more than the relay itself.
        outgoing = httpx.Request("POST", _target(settings.upstream, request), content=sent,
                                 headers=headers)
        try:
            response = await upstream.send(outgoing, stream=True)
        except httpx.HTTPError as exc:
            error = f"upstream unreachable: {type(exc).__name__}: {exc}"
            record(route, request_id, body, Answer(), started, settings.model_version or "", error)
            return JSONResponse({"error": {"message": error, "type": "upstream_error",
                                           "code": 502}}, status_code=502,
                                headers={REQUEST_ID_HEADER: request_id})
        version = response.headers.get(VERSION_HEADER) or settings.model_version or ""
        out_headers = _forward(response.headers, _DROP_RESPONSE)
        out_headers[REQUEST_ID_HEADER] = request_id
        is_stream = response.headers.get("content-type", "").startswith("text/event-stream")
        if not is_stream or response.status_code >= 400:
            try:
                content = await response.aread()
            except httpx.HTTPError as exc:
                await response.aclose()
                error = f"upstream failed mid-answer: {exc!r}"
                record(route, request_id, body, Answer(), started, version, error)
                return JSONResponse({"error": {"message": error, "type": "upstream_error",
                                               "code": 502}}, status_code=502,
                                    headers={REQUEST_ID_HEADER: request_id})
            await response.aclose()
            failure = (None if response.status_code < 400 else
                       f"HTTP {response.status_code}: {content[:500].decode(errors='replace')}")
            answer = read_answer(content) if failure is None else Answer()
            return Response(content, status_code=response.status_code, headers=out_headers,
                            background=BackgroundTask(record, route, request_id, body, answer,
                                                      started, version, failure,
                                                      time.perf_counter()))

        async def relay() -> AsyncIterator[bytes]:
            reader = StreamReader()
            upstream_error: str | None = None
            relayed_all = False
            try:
                async for chunk in response.aiter_raw():
                    reader.feed(chunk)
                    yield chunk
                relayed_all = True
            except httpx.HTTPError as exc:
                upstream_error = f"upstream failed mid-stream: {exc!r}"
            finally:
                await response.aclose()
                # a client that hangs up right after [DONE] (as SDKs do) got its answer
                error = upstream_error or (None if relayed_all or reader.done
                                           else _CLIENT_GONE)
                record(route, request_id, body, reader.finish(), started, version, error)

        return StreamingResponse(relay(), status_code=response.status_code,
                                 headers=out_headers)

    async def passthrough(request: Request) -> Response:
        """Every other /v1 route (models, embeddings, ...): relayed, not recorded."""
        headers = _forward(request.headers, _DROP_REQUEST)
        headers["accept-encoding"] = "identity"
        try:
            response = await upstream.request(request.method, _target(settings.upstream, request),
                                               content=await request.body(), headers=headers)
        except httpx.HTTPError as exc:
            return JSONResponse({"error": {"message": f"upstream unreachable: {exc!r}",
                                           "type": "upstream_error", "code": 502}},
                                status_code=502)
        return Response(response.content, status_code=response.status_code,
                        headers=_forward(response.headers, _DROP_RESPONSE))

    async def feedback(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as exc:
            return JSONResponse({"error": f"bad JSON: {exc}"}, status_code=400)
        body.setdefault("request_id", request.headers.get(REQUEST_ID_HEADER))
        model = body.get("model") or models_of.get(str(body.get("request_id")))
        if not model:
            return JSONResponse({"error": "unknown request_id: give `model` with the feedback"},
                                status_code=400)
        try:
            event = feedback_event(body, str(model), privacy)
        except EventError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        emitter.emit(event)
        metrics.feedback.inc()
        return JSONResponse({"request_id": event.request_id, "model": event.model},
                            status_code=202)

    async def prometheus(_request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"live": True, "upstream": settings.upstream})

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await upstream.aclose()
        emitter.close()

    app = Starlette(routes=[
        Route("/v1/chat/completions", generate, methods=["POST"]),
        Route("/v1/completions", generate, methods=["POST"]),
        Route("/v1/feedback", feedback, methods=["POST"]),
        Route("/metrics", prometheus, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/v1/{rest:path}", passthrough, methods=["GET", "POST", "DELETE"]),
    ], lifespan=lifespan)
    app.state.emitter = emitter
    return app


_CLIENT_GONE = "client went away before the answer ended"


def _target(upstream: str, request: Request) -> str:
    path, query = request.scope["path"], request.scope["query_string"]
    return f"{upstream}{path}?{query.decode()}" if query else f"{upstream}{path}"


def _forward(headers: Any, drop: set[str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in drop}


def serve(settings: TapSettings) -> None:
    """Run the tap until SIGINT/SIGTERM (uvicorn finishes requests in flight first)."""
    import uvicorn

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level="warning", access_log=False, timeout_graceful_shutdown=5)
