"""The event contract: InferenceEvent and FeedbackEvent, decoded straight from Kafka bytes.

msgspec validates while it parses (no intermediate dict), which is what lets the daemon's
whole ingest path outrun a consumer that only calls ``json.loads``. An inference's ``input`` is
``{"text": ...}``, a flat feature object, ``{"prompt": ...}`` or a chat (``{"messages": [...]}``);
a feedback says which of ``label``, ``reference`` or ``rating`` it carries (``kind``).
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
# Finish reasons generators report (OpenAI's and Triton's); any other string is kept as is.
FINISH_REASONS = ("stop", "length", "error", "content_filter", "tool_calls")
# Thumbs and booleans are ratings too: up/true is 1, down/false is 0.
_THUMBS = {"up": 1.0, "down": 0.0}
# RFC 3339 string or epoch milliseconds.
Timestamp = datetime | float


class ChatMessage(msgspec.Struct, frozen=True):
    """One turn of a chat, as OpenAI-compatible servers take it (text content only).
    ``content`` may be null (an assistant turn that only calls tools, or a tap that keeps no
    text), but not absent."""

    role: Role
    content: str | None


# ``input`` holds flat features, ``text``, a completion's ``prompt``, or a chat's ``messages``
# (the only key whose value may be a list; checked after decoding, see _check_input).
InputValue = Scalar | list[ChatMessage]
# Sampling parameters of a generative request (temperature, max_tokens, ...): scalars, and
# lists of strings for OpenAI's `stop`.
ParamValue = Scalar | list[str]


class Output(msgspec.Struct, frozen=True):
    """What the model answered: ``label``/``score`` for classifiers, ``text`` and
    ``finish_reason`` (stop, length, error, content_filter, tool_calls, ...) for generators."""

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

    @property
    def messages(self) -> list[ChatMessage] | None:
        """The chat, when the input is one."""
        value = None if self.input is None else self.input.get("messages")
        return value if isinstance(value, list) else None

    @property
    def prompt_text(self) -> str | None:
        """The text the detectors read as the prompt: a chat's last user message (the request
        itself; the whole history would grow with every turn and drift by conversation length
        alone), else ``prompt``, else ``text``."""
        if self.input is None:
            return None
        messages = self.input.get("messages")
        if isinstance(messages, list):
            return last_user_message(messages)
        for key in ("prompt", "text"):
            value = self.input.get(key)
            if isinstance(value, str):
                return value
        return None


class FeedbackEvent(msgspec.Struct, tag_field="schema", tag=FEEDBACK_SCHEMA, frozen=True):
    request_id: NonEmpty
    ts: Timestamp
    model: NonEmpty
    label: str | int | None = None  # the true class (classifiers)
    # A number in [0, 1], "up"/"down" or true/false: always a float once constructed.
    rating: Rating | bool | Literal["up", "down"] | None = None
    reference: str | None = None  # the corrected answer (generators)

    def __post_init__(self) -> None:
        rating = self.rating
        if rating is not None and type(rating) is not float:
            msgspec.structs.force_setattr(
                self, "rating", _THUMBS[rating] if isinstance(rating, str) else float(rating))

    @property
    def ts_s(self) -> float:
        return timestamp_seconds(self.ts)

    @property
    def rating_value(self) -> float | None:
        """The rating as the number it always is after construction."""
        return None if self.rating is None else float(self.rating)

    @property
    def kind(self) -> Literal["label", "reference", "rating"]:
        """What the feedback carries: a class label, a corrected reference (which may come
        with a rating), or a rating alone."""
        if self.label is not None:
            return "label"
        return "reference" if self.reference is not None else "rating"


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
    if isinstance(event, InferenceEvent):
        _check_inference(event)
    else:
        _check_feedback(event)
    return event


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def last_user_message(messages: list[ChatMessage]) -> str:
    """The content of the last user turn (the newest request), or "" when there is none."""
    for message in reversed(messages):
        if message.role == "user":
            return message.content or ""
    return ""


def render_messages(messages: list[ChatMessage]) -> str:
    """A chat as plain text, one ``role: content`` line per turn: the prompt of a model with
    no chat template."""
    return "\n".join(f"{m.role}: {m.content or ''}" for m in messages)


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


def _check_inference(event: InferenceEvent) -> None:
    # JSON has no NaN literal, but 1e999 parses as infinity.
    _finite("ts", None if isinstance(event.ts, datetime) else event.ts)
    _finite("latency_ms", event.latency_ms)
    _finite("ttft_ms", event.ttft_ms)
    if event.output is not None:
        _finite("output.score", event.output.score)
    if event.input is not None:
        _check_input(event.input)
    if event.params is not None:
        for key, value in event.params.items():
            if type(value) is float:
                _finite(f"params.{key}", value)


def _check_input(value: dict[str, InputValue]) -> None:
    """What msgspec's types cannot say: a list only as ``messages``, ``messages`` only as a
    non-empty list, ``prompt`` only as a string, and not both a chat and a prompt."""
    for key, item in value.items():
        kind = type(item)
        if kind is float:
            _finite(f"input.{key}", item)  # type: ignore[arg-type]
        elif kind is list and key != "messages":
            raise EventError("wrong_type", f"Expected a scalar, got `array` - at `$.input.{key}`"
                             " (only `input.messages` is a list)")
    if "messages" in value:
        messages = value["messages"]
        if not isinstance(messages, list):
            raise EventError("wrong_type", "Expected `array` of {role, content} messages, got "
                             f"`{type(messages).__name__}` - at `$.input.messages`")
        if not messages:
            raise EventError("invalid_value", "`$.input.messages` is empty: a chat needs at "
                             "least one message")
        if "prompt" in value:
            raise EventError("invalid_value", "`$.input` has both `messages` and `prompt`: "
                             "send one")
    prompt = value.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise EventError("wrong_type", f"Expected `str`, got `{type(prompt).__name__}` - at "
                         "`$.input.prompt`")


def _check_feedback(event: FeedbackEvent) -> None:
    _finite("ts", None if isinstance(event.ts, datetime) else event.ts)
    if event.label is None and event.reference is None and event.rating is None:
        raise EventError("missing_field", "feedback needs one of `label`, `reference` or "
                         "`rating`")
    if event.label is not None and event.reference is not None:
        raise EventError("invalid_value", "feedback has both `label` (a class) and `reference` "
                         "(a corrected answer): send one")


def _finite(field: str, number: float | None) -> None:
    if number is not None and not math.isfinite(number):
        raise EventError("not_finite", f"`{field}` must be a finite number, got {number}")
