"""The replica's inference endpoints: Open Inference Protocol v2 ``infer`` (a BYTES ``text``
input, or ``input_ids``/``attention_mask`` tensors as JSON or tritonclient's binary data) and
the plain-text endpoint; one InferenceEvent per text request."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from daemon.events import InferenceEvent, Output
from deploy.batching import QueueFull
from deploy.errors import DeployError
from deploy.oip_binary import HEADER as BINARY_HEADER
from deploy.oip_binary import read_request, write_response
from deploy.replica_responses import REQUEST_ID_HEADER, error_response, overloaded_response
from deploy.repository import parse_version
from deploy.serving import ModelServer, Prediction, ServingError


def infer_router(server: ModelServer, emit: Callable[[InferenceEvent], None],
                 observe: Callable[[str, int | None, bool, float], None],
                 replica: str) -> APIRouter:
    router = APIRouter()

    def log_event(slot_name: str, request_id: str, text: str, started: float,
                  prediction: Prediction | None, error: str | None, version: int | None) -> None:
        observe(slot_name, version, error is None, time.perf_counter() - started)
        output = None
        if prediction is not None:
            output = Output(label=prediction.label, score=prediction.score,
                            text=prediction.text)
        emit(InferenceEvent(
            request_id=request_id, ts=time.time() * 1000, model=slot_name,
            model_version=str(version if version is not None else "unknown"),
            latency_ms=(time.perf_counter() - started) * 1000,
            replica=replica, status="error" if error else "ok", error=error,
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

    @router.post("/v2/models/{name}/infer")
    @router.post("/v2/models/{name}/versions/{version}/infer")
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
            return overloaded_response(exc)
        except (ServingError, DeployError, KeyError, TypeError, ValueError) as exc:
            return error_response(400, f"{type(exc).__name__}: {exc}")
        except Exception as exc:
            return error_response(500, repr(exc))
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

    @router.post("/v2/models/{name}/text")
    @router.post("/v2/models/{name}/versions/{version}/text")
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
            return overloaded_response(exc)
        except (ServingError, DeployError, KeyError, ValueError) as exc:
            return error_response(400, f"{type(exc).__name__}: {exc}")
        except Exception as exc:
            return error_response(500, repr(exc))
        result: dict[str, Any] = {"model_name": name, "model_version": str(answer.version),
                                  "request_id": request_id}
        if answer.text is not None:
            result["text"] = answer.text
        else:
            result.update(label=answer.label, score=answer.score)
        return JSONResponse(result, headers={REQUEST_ID_HEADER: request_id})

    return router
