"""The replica as an OpenAI-compatible server (as Triton's OpenAI frontend is): ``/v1/models``,
``/v1/chat/completions`` and ``/v1/completions`` over its loaded causal LMs, streamed (server-sent
events, one token per chunk) or not, with ``usage``; decoded on the KV cache with the request's
temperature, top_p, stop and seed (deploy.generation), greedy when temperature is 0 or absent."""

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
from deploy.generate_api import pieces
from deploy.generation import Sampling, Stream, render_chat
from deploy.serving import LoadedModel, ModelServer, ServingError
from deploy.tap_events import Answer, Privacy, inference_event

REQUEST_ID_HEADER = "x-request-id"
VERSION_HEADER = "x-model-version"
_FULL = Privacy()


class ApiError(DeployError):
    """A request the OpenAI-compatible API answers with an error: ``status``, and the
    ``param`` at fault when one is."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param


def _error(exc: ApiError) -> JSONResponse:
    kind = "invalid_request_error" if exc.status < 500 else "server_error"
    code = "model_not_found" if exc.status == 404 else None
    return JSONResponse({"error": {"message": str(exc), "type": kind, "param": exc.param,
                                   "code": code}}, status_code=exc.status)


def usage(run: Stream) -> dict[str, int]:
    return {"prompt_tokens": run.tokens_in, "completion_tokens": len(run.tokens),
            "total_tokens": run.tokens_in + len(run.tokens)}


def openai_router(server: ModelServer, emit: Callable[[InferenceEvent], None],
                  observe: Callable[[str, int | None, bool, float], None],
                  replica: str) -> APIRouter:
    router = APIRouter()

    def generative(name: Any) -> LoadedModel:
        if not isinstance(name, str) or not name:
            raise ApiError(400, "`model` is required", "model")
        try:
            slot = server.get(name)
        except ServingError as exc:
            raise ApiError(404, str(exc), "model") from None
        if slot.task != "causal-lm":
            raise ApiError(400, f"model '{name}' is a {slot.task} model, not a generator",
                           "model")
        return slot

    def parse(body: Any, chat: bool) -> tuple[LoadedModel, str, Sampling]:
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object")
        slot = generative(body.get("model"))
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages or not all(
                    isinstance(m, dict) and isinstance(m.get("role"), str)
                    and isinstance(m.get("content"), str | None) for m in messages):
                raise ApiError(400, "`messages` must be a non-empty list of {role, content} "
                                    "with text content", "messages")
            prompt = render_chat(slot.model.tokenizer, messages)
        else:
            if not isinstance(body.get("prompt"), str):
                raise ApiError(400, "`prompt` must be a string", "prompt")
            prompt = body["prompt"]
        if body.get("n", 1) != 1:
            raise ApiError(400, "only n=1 is supported", "n")
        try:
            sampling = Sampling.from_params(body)
        except ValueError as exc:  # the message starts with the parameter's name
            raise ApiError(400, f"`{str(exc).split()[0]}` {str(exc).partition(' ')[2]}",
                           str(exc).split()[0]) from None
        return slot, prompt, sampling

    def log(body: dict[str, Any], slot: LoadedModel, request_id: str, run: Stream,
            started: float, first: float | None, error: str | None) -> None:
        ended = time.perf_counter()
        observe(slot.name, slot.version, error is None, ended - started)
        answer = Answer(text=run.text, finish_reason=run.finish_reason,
                        tokens_in=run.tokens_in, tokens_out=len(run.tokens),
                        first_token_at=first)
        emit(inference_event(request_id=request_id, model=slot.name, version=str(slot.version),
                             replica=replica, body=body, answer=answer, started=started,
                             ended=ended, error=error, privacy=_FULL))

    async def complete(request: Request, chat: bool) -> Response:
        started = time.perf_counter()
        request_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        try:
            body = json.loads(await request.body())
            slot, prompt, sampling = parse(body, chat)
        except ValueError as exc:
            return _error(ApiError(400, f"bad JSON: {exc}"))
        except ApiError as exc:
            return _error(exc)
        run = Stream(slot.model, slot.model.prompt_ids(prompt), sampling)
        timing: dict[str, float] = {}
        kind = "chat.completion" if chat else "text_completion"
        head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{request_id}", "created": int(time.time()),
                "model": slot.name}
        headers = {REQUEST_ID_HEADER: request_id, VERSION_HEADER: str(slot.version)}
        if body.get("stream") is not True:
            try:
                async for _ in pieces(server, run, timing):
                    pass
            except Exception as exc:
                log(body, slot, request_id, run, started, timing.get("first"), repr(exc))
                return _error(ApiError(500, repr(exc)))
            log(body, slot, request_id, run, started, timing.get("first"), None)
            choice: dict[str, Any] = {"index": 0, "finish_reason": run.finish_reason,
                                      "logprobs": None}
            if chat:
                choice["message"] = {"role": "assistant", "content": run.text}
            else:
                choice["text"] = run.text
            return JSONResponse({**head, "object": kind, "choices": [choice],
                                 "usage": usage(run)}, headers=headers)
        usage_too = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: str | None, finish: str | None, role: bool = False) -> bytes:
            choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
            if chat:
                choice["delta"] = ({"role": "assistant", "content": ""} if role
                                   else {} if delta is None else {"content": delta})
            else:
                choice["text"] = delta or ""
            payload = {**head, "object": f"{kind}.chunk" if chat else kind, "choices": [choice]}
            if usage_too:
                payload["usage"] = None  # as OpenAI: null on every chunk but the last
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        async def events() -> AsyncIterator[bytes]:
            error: str | None = "client went away before the answer ended"
            try:
                if chat:
                    yield chunk(None, None, role=True)
                async for piece in pieces(server, run, timing):
                    yield chunk(piece, None)
                yield chunk(None, run.finish_reason)
                if usage_too:
                    payload = {**head, "object": f"{kind}.chunk" if chat else kind,
                               "choices": [], "usage": usage(run)}
                    yield b"data: " + json.dumps(payload).encode() + b"\n\n"
                yield b"data: [DONE]\n\n"
                error = None
            except Exception as exc:  # headers are gone: the stream just ends, and is logged
                error = repr(exc)
            finally:
                log(body, slot, request_id, run, started, timing.get("first"), error)

        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    @router.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await complete(request, chat=True)

    @router.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await complete(request, chat=False)

    @router.get("/v1/models")
    async def models() -> JSONResponse:
        data = [{"id": name, "object": "model", "created": int(slot.loaded_at),
                 "owned_by": "lifeguard", "version": str(slot.version)}
                for name, slot in sorted(server.loaded.items()) if slot.task == "causal-lm"]
        return JSONResponse({"object": "list", "data": data})

    return router
