"""The event contract: valid events parse, every kind of bad message fails with its reason."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime

import pytest

from daemon.events import (
    EventError,
    FeedbackEvent,
    InferenceEvent,
    decode,
    encode,
)
from harness.traffic import feedback_record, inference_record, malformed_messages

BASE = {
    "schema": "inference/v1", "request_id": "r-1", "ts": "2026-11-29T10:00:00Z",
    "model": "sentiment", "model_version": "3", "replica": "replica-0", "latency_ms": 12.5,
    "status": "ok", "input": {"text": "loved it"}, "output": {"label": "positive", "score": 0.9},
}


def _bytes(**changes: object) -> bytes:
    record = {**BASE, **changes}
    return json.dumps({k: v for k, v in record.items() if v is not ...}).encode()


def test_inference_event_parses_with_rfc3339_time() -> None:
    event = decode(_bytes())
    assert isinstance(event, InferenceEvent)
    assert event.output is not None and event.output.label == "positive"
    assert event.ts_s == datetime(2026, 11, 29, 10, tzinfo=UTC).timestamp()


def test_epoch_millisecond_timestamps_are_seconds() -> None:
    event = decode(_bytes(ts=1_764_410_400_000))
    assert event.ts_s == pytest.approx(1_764_410_400.0)


def test_unknown_fields_are_tolerated() -> None:
    event = decode(_bytes(trace_id="abc", extra={"nested": [1, 2]}))
    assert isinstance(event, InferenceEvent) and event.request_id == "r-1"


def test_flat_feature_inputs_are_accepted() -> None:
    event = decode(_bytes(input={"age": 41, "tier": "gold", "vip": True, "score": 0.3}))
    assert isinstance(event, InferenceEvent) and event.input == {
        "age": 41, "tier": "gold", "vip": True, "score": 0.3}


def test_feedback_event_parses() -> None:
    event = decode(json.dumps(feedback_record("r-1", "sentiment", "negative")).encode())
    assert isinstance(event, FeedbackEvent) and event.label == "negative"


def test_feedback_rating_must_be_in_unit_interval() -> None:
    record = {"schema": "feedback/v1", "request_id": "r", "ts": 1, "model": "m", "rating": 1.5}
    with pytest.raises(EventError) as err:
        decode(json.dumps(record).encode())
    assert err.value.reason == "out_of_range" and "$.rating" in err.value.detail


@pytest.mark.parametrize(
    ("message", "reason", "mentions"),
    [
        (b"{not json", "bad_json", "malformed"),
        (b"[1, 2]", "not_an_object", "array"),
        (_bytes(latency_ms="fast"), "wrong_type", "$.latency_ms"),
        (_bytes(request_id=...), "missing_field", "request_id"),
        (_bytes(request_id=""), "out_of_range", "$.request_id"),
        (_bytes(schema="inference/v9"), "unknown_schema", "inference/v9"),
        (_bytes(schema=...), "missing_field", "schema"),
        (_bytes(latency_ms=-1), "out_of_range", "$.latency_ms"),
        (_bytes(tokens_out=-2), "out_of_range", "$.tokens_out"),
        (_bytes(status="maybe"), "invalid_value", "$.status"),
        (_bytes(input={"text": ["a"]}), "wrong_type", "$.input"),
        (_bytes().replace(b"12.5", b"1e999"), "out_of_range", "$.latency_ms"),
        (_bytes().replace(b"loved", b"\xff\xfeloved"), "invalid_utf8", "UTF-8"),
    ],
)
def test_bad_messages_fail_with_a_reason_and_the_field(message: bytes, reason: str,
                                                       mentions: str) -> None:
    with pytest.raises(EventError) as err:
        decode(message)
    assert err.value.reason == reason
    assert mentions in err.value.detail


def test_size_limit_is_checked_before_parsing() -> None:
    big = _bytes(input={"text": "x" * 5000})
    with pytest.raises(EventError) as err:
        decode(big, max_bytes=4096)
    assert err.value.reason == "too_large" and str(len(big)) in err.value.detail
    assert isinstance(decode(big, max_bytes=len(big)), InferenceEvent)


def test_non_finite_numbers_in_inputs_are_rejected() -> None:
    message = _bytes(input={"x": 1.0}).replace(b'"x": 1.0', b'"x": 1e400')
    with pytest.raises(EventError) as err:
        decode(message)
    assert err.value.reason in {"not_finite", "out_of_range"}


def test_tombstones_are_rejected() -> None:
    with pytest.raises(EventError) as err:
        decode(None)
    assert err.value.reason == "empty"


def test_generated_malformed_messages_get_the_reason_they_claim() -> None:
    for reason, message in malformed_messages(random.Random(3), 16, max_bytes=2048):
        with pytest.raises(EventError) as err:
            decode(message, max_bytes=2048)
        assert err.value.reason == reason


def test_round_trip_of_generated_traffic() -> None:
    rng = random.Random(5)
    for _ in range(200):
        record = inference_record(rng)
        event = decode(json.dumps(record).encode())
        assert isinstance(event, InferenceEvent)
        again = decode(encode(event))
        assert again == event
        assert math.isfinite(event.latency_ms) and event.latency_ms >= 0


def test_chat_messages_params_and_finish_reason_parse() -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": None}, {"role": "tool", "content": "42"}]
    event = decode(_bytes(input={"messages": messages},
                          params={"temperature": 0.0, "max_tokens": 8, "stop": ["\n"]},
                          output={"text": "hello", "finish_reason": "length"}))
    assert isinstance(event, InferenceEvent) and event.input is not None
    chat = event.input["messages"]
    assert isinstance(chat, list) and [m.role for m in chat] == [
        "system", "user", "assistant", "tool"]
    assert chat[1].content == "hi" and chat[2].content is None
    assert event.params == {"temperature": 0.0, "max_tokens": 8, "stop": ["\n"]}
    assert event.output is not None and event.output.finish_reason == "length"
    assert decode(encode(event)) == event


def test_completion_prompt_input_parses() -> None:
    event = decode(_bytes(input={"prompt": "Once upon"}, output={"text": " a time"}))
    assert isinstance(event, InferenceEvent) and event.input == {"prompt": "Once upon"}


@pytest.mark.parametrize(("changes", "reason"), [
    ({"input": {"messages": [{"role": "robot", "content": "x"}]}}, "invalid_value"),
    ({"input": {"messages": [{"content": "x"}]}}, "missing_field"),
    ({"input": {"tags": [{"role": "user", "content": "x"}]}}, "wrong_type"),
    ({"params": {"stop": [1, 2]}}, "wrong_type"),
    ({"output": {"text": "x", "finish_reason": 3}}, "wrong_type"),
])
def test_bad_generative_fields_fail_with_a_reason(changes: dict[str, object],
                                                  reason: str) -> None:
    with pytest.raises(EventError) as info:
        decode(_bytes(**changes))
    assert info.value.reason == reason, info.value.detail


def test_non_finite_sampling_params_are_rejected() -> None:
    message = _bytes(params={"top_p": 1.0}).replace(b'"top_p": 1.0', b'"top_p": 1e400')
    with pytest.raises(EventError) as err:
        decode(message)
    assert err.value.reason in {"not_finite", "out_of_range"}
