"""Triton's generate extension on the replica: ``POST /v2/models/{model}[/versions/{v}]/generate``
(``{"text_input", "parameters"}`` → ``{"model_name", "model_version", "text_output"}``) and
``.../generate_stream`` (server-sent events, one ``data: {...}`` per token), decoded on the KV
cache with the request's sampling parameters; one InferenceEvent per request with TTFT, token
counts, finish_reason, params and ``input.prompt``."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from daemon.events import InferenceEvent
from deploy.errors import DeployError
from deploy.generation import Sampling, Stream
from deploy.repository import parse_version
from deploy.serving import LoadedModel, ModelServer, ServingError
from deploy.tap_events import Answer, Privacy, inference_event

REQUEST_ID_HEADER = "x-request-id"
_FULL = Privacy()


class GenerateError(DeployError):
    """A generate request the replica refuses: ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def pieces(server: ModelServer, stream: Stream, timing: dict[str, float]
                 ) -> AsyncIterator[str]:
    """The stream's text pieces, one model step each on the inference threads; the time of
    the first generated token goes to ``timing["first"]`` (a perf_counter reading)."""
    while stream.finish_reason is None:
        piece = await server.in_pool(stream.step)
        if stream.tokens and "first" not in timing:
            timing["first"] = time.perf_counter()
        if piece:
            yield piece


def generate_router(server: ModelServer, emit: Callable[[InferenceEvent], None],
                    observe: Callable[[str, int | None, bool, float], None],
                    replica: str) -> APIRouter:
    router = APIRouter()

    def parse(name: str, version: str | None, raw: bytes) -> tuple[LoadedModel, str, Sampling,
                                                                  dict[str, Any]]:
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise GenerateError(400, f"bad JSON: {exc}") from None
        if not isinstance(body, dict) or not isinstance(body.get("text_input"), str):
            raise GenerateError(400, "the body must be a JSON object with a string `text_input`")
        params = body.get("parameters") or {}
        if not isinstance(params, dict):
            raise GenerateError(400, "`parameters` must be an object")
        try:
            slot = server.get(name, None if version is None else parse_version(version))
        except (ServingError, DeployError) as exc:
            raise GenerateError(404, str(exc)) from None
        if slot.task != "causal-lm":
            raise GenerateError(400, f"model '{name}' is a {slot.task} model, not a generator")
        try:
            sampling = Sampling.from_params(params)
        except ValueError as exc:
            raise GenerateError(400, str(exc)) from None
        return slot, body["text_input"], sampling, params

    def log(slot: LoadedModel, request_id: str, prompt: str, params: dict[str, Any],
            stream: Stream, started: float, timing: dict[str, float], error: str | None) -> None:
        ended = time.perf_counter()
        observe(slot.name, slot.version, error is None, ended - started)
        answer = Answer(text=stream.text, finish_reason=stream.finish_reason,
                        tokens_in=stream.tokens_in, tokens_out=len(stream.tokens),
                        first_token_at=timing.get("first"))
        # as an OpenAI completion body: input.prompt and the sampling params
        emit(inference_event(request_id=request_id, model=slot.name, version=str(slot.version),
                             replica=replica, body={**params, "prompt": prompt}, answer=answer,
                             started=started, ended=ended, error=error, privacy=_FULL))

    async def generate(name: str, version: str | None, request: Request,
                       streamed: bool) -> Response:
        started = time.perf_counter()
        request_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        try:
            slot, prompt, sampling, params = parse(name, version, await request.body())
        except GenerateError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        stream = Stream(slot.model, slot.model.prompt_ids(prompt), sampling)
        head = {"model_name": slot.name, "model_version": str(slot.version)}
        headers = {REQUEST_ID_HEADER: request_id}
        timing: dict[str, float] = {}
        if not streamed:
            try:
                async for _ in pieces(server, stream, timing):
                    pass
            except Exception as exc:
                log(slot, request_id, prompt, params, stream, started, timing, repr(exc))
                return JSONResponse({"error": repr(exc)}, status_code=500, headers=headers)
            log(slot, request_id, prompt, params, stream, started, timing, None)
            return JSONResponse({**head, "text_output": stream.text}, headers=headers)

        async def events() -> AsyncIterator[bytes]:
            error: str | None = "client went away before the answer ended"
            try:
                async for piece in pieces(server, stream, timing):
                    yield b"data: " + json.dumps({**head, "text_output": piece}).encode() + b"\n\n"
                error = None
            except Exception as exc:  # headers are gone: say so in the stream, and log it
                error = repr(exc)
                yield b"data: " + json.dumps({"error": error}).encode() + b"\n\n"
            finally:
                log(slot, request_id, prompt, params, stream, started, timing, error)

        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    @router.post("/v2/models/{name}/generate")
    @router.post("/v2/models/{name}/versions/{version}/generate")
    async def generate_once(name: str, request: Request, version: str | None = None) -> Response:
        return await generate(name, version, request, streamed=False)

    @router.post("/v2/models/{name}/generate_stream")
    @router.post("/v2/models/{name}/versions/{version}/generate_stream")
    async def generate_stream(name: str, request: Request,
                              version: str | None = None) -> Response:
        return await generate(name, version, request, streamed=True)

    return router
