"""The event contract: InferenceEvent and FeedbackEvent, decoded straight from Kafka bytes.

msgspec validates while it parses (no intermediate dict), which is what lets the daemon's
whole ingest path outrun a consumer that only calls ``json.loads``.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from lifeguard.errors import LifeguardError

INFERENCE_SCHEMA = "inference/v1"
FEEDBACK_SCHEMA = "feedback/v1"

NonNegative = Annotated[float, msgspec.Meta(ge=0)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
Rating = Annotated[float, msgspec.Meta(ge=0, le=1)]
Scalar = str | float | bool | None
Role = Literal["system", "user", "assistant", "tool"]
# RFC 3339 string or epoch milliseconds.
Timestamp = datetime | float


class ChatMessage(msgspec.Struct, frozen=True):
    """One turn of a chat request, as OpenAI-compatible servers take it (text content only)."""

    role: Role
    content: str | None = None


# ``input`` holds flat features, ``text``, a completion's ``prompt``, or a chat's ``messages``
# (the only key whose value may be a list).
InputValue = Scalar | list[ChatMessage]
# Sampling parameters of a generative request (temperature, max_tokens, stop, ...).
ParamValue = Scalar | list[str]


class Output(msgspec.Struct, frozen=True):
    """What the model answered: ``label``/``score`` for classifiers, ``text`` for generators
    (with the ``finish_reason`` an OpenAI-compatible server reports: stop, length, ...)."""

    label: str | int | None = None
    score: float | None = None
    text: str | None = None
    finish_reason: str | None = None


class InferenceEvent(msgspec.Struct, tag_field="schema", tag=INFERENCE_SCHEMA, frozen=True):
    request_id: NonEmpty
    ts: Timestamp
    model: NonEmpty
    model_version: NonEmpty
    latency_ms: NonNegative
    replica: str | None = None
    ttft_ms: NonNegative | None = None
    tokens_in: NonNegativeInt | None = None
    tokens_out: NonNegativeInt | None = None
    status: Literal["ok", "error"] = "ok"
    error: str | None = None
    input: dict[str, InputValue] | None = None
    params: dict[str, ParamValue] | None = None
    output: Output | None = None

    @property
    def ts_s(self) -> float:
        ts = self.ts
        # Epoch milliseconds decode as float: the common case skips a call (hot path).
        return ts / 1000.0 if type(ts) is float else timestamp_seconds(ts)


class FeedbackEvent(msgspec.Struct, tag_field="schema", tag=FEEDBACK_SCHEMA, frozen=True):
    request_id: NonEmpty
    ts: Timestamp
    model: NonEmpty
    label: str | int | None = None
    rating: Rating | None = None
    reference: str | None = None

    @property
    def ts_s(self) -> float:
        return timestamp_seconds(self.ts)


Event = InferenceEvent | FeedbackEvent

_decoder = msgspec.json.Decoder(Event)
_encoder = msgspec.json.Encoder()


class EventError(LifeguardError, ValueError):
    """A message that is not a valid event; ``reason`` is a short label for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def decode(value: bytes | None, max_bytes: int = 1 << 20) -> Event:
    """Decode and validate one message value, or raise ``EventError`` saying why not."""
    if value is None:
        raise EventError("empty", "message has no value (tombstone)")
    if len(value) > max_bytes:
        raise EventError("too_large", f"message is {len(value)} bytes, limit is {max_bytes}")
    try:
        event = _decoder.decode(value)
    except msgspec.ValidationError as exc:
        raise EventError(_validation_reason(str(exc)), str(exc)) from None
    except msgspec.DecodeError as exc:
        reason = "invalid_utf8" if "UTF-8" in str(exc) else "bad_json"
        raise EventError(reason, str(exc)) from None
    _check_finite(event)
    _check_input(event)
    return event


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def timestamp_seconds(ts: Timestamp) -> float:
    """Epoch seconds from an RFC 3339 datetime or an epoch-milliseconds number."""
    if isinstance(ts, datetime):
        return ts.timestamp()
    return ts / 1000.0


def _validation_reason(message: str) -> str:
    if "missing required field" in message:
        return "missing_field"
    if "Invalid value" in message and "$.schema" in message:
        return "unknown_schema"
    if "Expected `object`" in message and " - at " not in message:
        return "not_an_object"
    if ">=" in message or "<=" in message or "out of range" in message:
        return "out_of_range"
    if "Expected" in message:
        return "wrong_type"
    return "invalid_value"


def _check_finite(event: Event) -> None:
    # JSON has no NaN literal, but 1e999 parses as infinity.
    numbers: list[tuple[str, float | None]]
    if isinstance(event, InferenceEvent):
        numbers = [("ts", None if isinstance(event.ts, datetime) else event.ts),
                   ("latency_ms", event.latency_ms), ("ttft_ms", event.ttft_ms)]
        if event.output is not None:
            numbers.append(("output.score", event.output.score))
        if event.input is not None:
            numbers.extend((f"input.{k}", v) for k, v in event.input.items()
                           if isinstance(v, float))
        if event.params is not None:
            numbers.extend((f"params.{k}", v) for k, v in event.params.items()
                           if isinstance(v, float))
    else:
        numbers = [("ts", None if isinstance(event.ts, datetime) else event.ts)]
    for field, number in numbers:
        if number is not None and not math.isfinite(number):
            raise EventError("not_finite", f"`{field}` must be a finite number, got {number}")


def _check_input(event: Event) -> None:
    if not isinstance(event, InferenceEvent) or event.input is None:
        return
    for key, value in event.input.items():
        if isinstance(value, list) and key != "messages":
            raise EventError("wrong_type", f"`input.{key}` must be a scalar: only "
                                           "`input.messages` holds a list")
