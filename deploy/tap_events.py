"""What the tap reads from OpenAI-compatible traffic: the request's messages/prompt and sampling
params, the answer's text, finish_reason and usage (from one JSON body or a stream of server-sent
events), cut to the privacy setting, and turned into ``inference/v1`` / ``feedback/v1`` events."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from daemon.events import (
    ChatMessage,
    EventError,
    FeedbackEvent,
    InferenceEvent,
    InputValue,
    Output,
    ParamValue,
    decode,
)

Content = Literal["full", "truncate", "drop"]
# OpenAI's newer or older names for the contract's roles; anything else is left out.
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
          "tool": "tool", "function": "tool"}
_PARAMS = ("temperature", "top_p", "top_k", "max_tokens", "max_completion_tokens", "n", "stop",
           "seed", "presence_penalty", "frequency_penalty", "repetition_penalty", "stream")


@dataclass(frozen=True)
class Privacy:
    """How much of the conversation reaches Kafka: all of it, the first ``max_chars`` of each
    text, or none (roles, counts, timings and finish_reason are always kept)."""

    content: Content = "full"
    max_chars: int = 2000

    def cut(self, text: str | None) -> str | None:
        if text is None or self.content == "full":
            return text
        if self.content == "drop":
            return None
        return text[: self.max_chars]


@dataclass
class Answer:
    """The upstream's answer as far as the tap has read it."""

    text: str | None = None
    finish_reason: str | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    model: str | None = None
    first_token_at: float | None = None  # time.perf_counter() of the first streamed token


@dataclass
class StreamReader:
    """Reads server-sent events as they pass (any chunking) without holding the stream up."""

    answer: Answer = field(default_factory=Answer)
    _buffer: bytes = b""
    _parts: list[str] = field(default_factory=list)
    _chunks_with_text: int = 0
    done: bool = False  # the upstream's terminal ``data: [DONE]`` went by

    def feed(self, chunk: bytes, now: float | None = None) -> None:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            line = line.rstrip(b"\r")
            if line.startswith(b"data:"):
                self._data(line[5:].strip(), time.perf_counter() if now is None else now)

    def finish(self) -> Answer:
        if self._buffer:
            self.feed(b"\n")
        answer = self.answer
        answer.text = "".join(self._parts) if self._parts or answer.finish_reason else None
        if answer.tokens_out is None and self._chunks_with_text:
            # No usage chunk (an upstream that ignores stream_options): OpenAI-compatible
            # servers send one token per chunk, so the chunk count is the token count.
            answer.tokens_out = self._chunks_with_text
        return answer

    def _data(self, data: bytes, now: float) -> None:
        if data == b"[DONE]":
            self.done = True
            return
        if not data:
            return
        try:
            payload = json.loads(data)
        except ValueError:
            return
        if not isinstance(payload, dict):
            return
        _usage(payload, self.answer)
        self.answer.model = self.answer.model or _str(payload.get("model"))
        for choice in payload.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # n > 1: the event records the first choice
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
            if isinstance(text, str) and text:
                self._parts.append(text)
                self._chunks_with_text += 1
                if self.answer.first_token_at is None:
                    self.answer.first_token_at = now
            reason = choice.get("finish_reason")
            if isinstance(reason, str):
                self.answer.finish_reason = reason


def read_answer(body: bytes) -> Answer:
    """A non-streamed completion or chat completion."""
    answer = Answer()
    try:
        payload = json.loads(body)
    except ValueError:
        return answer
    if not isinstance(payload, dict):
        return answer
    _usage(payload, answer)
    answer.model = _str(payload.get("model"))
    choices = payload.get("choices") or []
    if choices and isinstance(choices[0], dict):
        choice = choices[0]
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else choice.get("text")
        answer.text = text if isinstance(text, str) else None
        answer.finish_reason = _str(choice.get("finish_reason"))
    return answer


def request_input(body: dict[str, Any], privacy: Privacy) -> dict[str, InputValue] | None:
    """``{"messages": [...]}`` of a chat, ``{"prompt": ...}`` of a completion."""
    if isinstance(body.get("messages"), list):
        messages: list[ChatMessage] = []
        for message in body["messages"]:
            if not isinstance(message, dict) or message.get("role") not in _ROLES:
                continue
            role = _ROLES[message["role"]]
            messages.append(ChatMessage(role=role,  # type: ignore[arg-type]
                                        content=privacy.cut(_text_of(message.get("content")))))
        return {"messages": messages}
    prompt = body.get("prompt")
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        prompt = "\n".join(prompt)  # a batch of prompts: one event, their texts together
    if isinstance(prompt, str):
        cut = privacy.cut(prompt)
        return {"prompt": cut} if cut is not None else {}
    return None


def request_params(body: dict[str, Any]) -> dict[str, ParamValue] | None:
    params: dict[str, ParamValue] = {}
    for key in _PARAMS:
        value = body.get(key)
        scalar = isinstance(value, str | bool | int | float)
        if scalar or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            params[key] = value
    return params or None


def inference_event(*, request_id: str, model: str, version: str, replica: str | None,
                    body: dict[str, Any], answer: Answer, started: float, ended: float,
                    error: str | None, privacy: Privacy) -> InferenceEvent:
    """``started``/``ended``/``answer.first_token_at`` are ``time.perf_counter()`` readings."""
    output = None
    if error is None:
        output = Output(text=privacy.cut(answer.text), finish_reason=answer.finish_reason)
    ttft = (None if answer.first_token_at is None
            else max(0.0, (answer.first_token_at - started) * 1000))
    return InferenceEvent(
        request_id=request_id, ts=time.time() * 1000, model=model or "unknown",
        model_version=version or "unknown", latency_ms=max(0.0, (ended - started) * 1000),
        replica=replica, ttft_ms=ttft, tokens_in=answer.tokens_in, tokens_out=answer.tokens_out,
        status="error" if error else "ok", error=error, input=request_input(body, privacy),
        params=request_params(body), output=output)


def feedback_event(body: dict[str, Any], model: str | None, privacy: Privacy) -> FeedbackEvent:
    """Validated by the contract's own decoder; raises EventError saying what is wrong."""
    if not any(body.get(k) is not None for k in ("label", "rating", "reference")):
        raise EventError("missing_field", "give one of `label`, `rating` or `reference`")
    record = {"schema": "feedback/v1", "request_id": body.get("request_id"),
              "ts": time.time() * 1000, "model": model, "label": body.get("label"),
              "rating": body.get("rating"), "reference": privacy.cut(body.get("reference"))
              if isinstance(body.get("reference"), str) else body.get("reference")}
    event = decode(msgspec.json.encode({k: v for k, v in record.items() if v is not None}))
    assert isinstance(event, FeedbackEvent)
    return event


def _usage(payload: dict[str, Any], answer: Answer) -> None:
    usage = payload.get("usage")
    if isinstance(usage, dict):
        if isinstance(usage.get("prompt_tokens"), int):
            answer.tokens_in = usage["prompt_tokens"]
        if isinstance(usage.get("completion_tokens"), int):
            answer.tokens_out = usage["completion_tokens"]


def _text_of(content: Any) -> str | None:
    """A message's content: a string, or the text of its parts (images etc. named only)."""
    if isinstance(content, str) or content is None:
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict):
                kind = part.get("type")
                parts.append(part.get("text", "") if kind == "text" else f"[{kind}]")
        return "".join(str(p) for p in parts)
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
