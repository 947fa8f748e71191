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
    render_messages,
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


# -- generators: chat, prompt, params, finish_reason; feedback kinds -------------------------

CHAT = {**BASE, "input": {"messages": [
    {"role": "system", "content": "You are a support agent."},
    {"role": "user", "content": "my router blinks red"},
    {"role": "assistant", "content": "Did you restart it?"},
    {"role": "tool", "content": "{\"status\": \"offline\"}"},
    {"role": "user", "content": "yes, still red"}]},
    "params": {"temperature": 0.7, "top_p": 0.9, "max_tokens": 128, "stream": True,
               "stop": "\n\n"},
    "ttft_ms": 40.0, "tokens_in": 31, "tokens_out": 64,
    "output": {"text": "Then reset it with the pin.", "finish_reason": "length"}}


def _feedback(**fields: object) -> bytes:
    return json.dumps({"schema": "feedback/v1", "request_id": "r", "ts": 1, "model": "m",
                       **fields}).encode()


def test_chat_events_parse_with_params_and_finish_reason() -> None:
    event = decode(json.dumps(CHAT).encode())
    assert isinstance(event, InferenceEvent)
    assert event.messages is not None and [m.role for m in event.messages] == [
        "system", "user", "assistant", "tool", "user"]
    assert event.prompt_text == "yes, still red"  # the newest request, not the history
    assert event.params == {"temperature": 0.7, "top_p": 0.9, "max_tokens": 128,
                            "stream": True, "stop": "\n\n"}
    assert event.output is not None and event.output.finish_reason == "length"
    assert decode(encode(event)) == event
    assert render_messages(event.messages).splitlines()[1] == "user: my router blinks red"


def test_plain_prompts_and_old_shapes_still_parse() -> None:
    prompt = decode(_bytes(input={"prompt": "Summarise: the meeting moved to 3pm."},
                           output={"text": "Meeting at 3pm.", "finish_reason": "stop"}))
    assert isinstance(prompt, InferenceEvent) and prompt.messages is None
    assert prompt.prompt_text == "Summarise: the meeting moved to 3pm."
    old = decode(_bytes())
    assert isinstance(old, InferenceEvent) and old.prompt_text == "loved it"
    flat = decode(_bytes(input={"age": 3, "tier": "gold"}))
    assert isinstance(flat, InferenceEvent) and flat.prompt_text is None
    custom = decode(_bytes(output={"text": "x", "finish_reason": "eos_token"}))
    assert isinstance(custom, InferenceEvent) and custom.output is not None
    assert custom.output.finish_reason == "eos_token"  # other reasons are kept as they are


def test_an_assistant_turn_may_have_null_content() -> None:
    event = decode(_bytes(input={"messages": [{"role": "user", "content": "hi"},
                                              {"role": "assistant", "content": None}]}))
    assert isinstance(event, InferenceEvent) and event.prompt_text == "hi"


@pytest.mark.parametrize(
    ("input_", "reason", "mentions"),
    [
        ({"messages": [{"role": "robot", "content": "x"}]}, "invalid_value", "role"),
        ({"messages": [{"content": "x"}]}, "missing_field", "role"),
        ({"messages": [{"role": "user"}]}, "missing_field", "content"),
        ({"messages": ["hello"]}, "wrong_type", "$.input"),
        ({"messages": {"role": "user", "content": "x"}}, "wrong_type", "$.input"),
        ({"messages": "hello"}, "wrong_type", "$.input.messages"),
        ({"messages": []}, "invalid_value", "$.input.messages"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "wrong_type",
         "content"),
        ({"tags": [{"role": "user", "content": "x"}]}, "wrong_type", "$.input.tags"),
        ({"prompt": 3}, "wrong_type", "$.input.prompt"),
        ({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "invalid_value",
         "both"),
    ],
)
def test_bad_chat_shapes_fail_with_a_reason(input_: object, reason: str, mentions: str) -> None:
    with pytest.raises(EventError) as err:
        decode(_bytes(input=input_))
    assert err.value.reason == reason
    assert mentions in err.value.detail


def test_params_are_flat_finite_scalars() -> None:
    with pytest.raises(EventError) as err:
        decode(_bytes(params={"temperature": [0.7]}))
    assert err.value.reason == "wrong_type" and "$.params" in err.value.detail
    with pytest.raises(EventError) as err:
        decode(_bytes(params={"temperature": 0.5}).replace(b"0.5", b"1e999"))
    assert err.value.reason in {"not_finite", "out_of_range"} and "params" in err.value.detail


@pytest.mark.parametrize(("rating", "value"), [
    (0.25, 0.25), (1, 1.0), ("up", 1.0), ("down", 0.0), (True, 1.0), (False, 0.0)])
def test_ratings_thumbs_and_booleans_become_numbers(rating: object, value: float) -> None:
    event = decode(_feedback(rating=rating))
    assert isinstance(event, FeedbackEvent) and event.kind == "rating"
    assert event.rating == value and type(event.rating) is float
    assert event.rating_value == value
    assert decode(encode(event)) == event


def test_feedback_says_what_it_carries() -> None:
    label = decode(_feedback(label="negative"))
    reference = decode(_feedback(reference="Reset it with the pin.", rating="down"))
    assert isinstance(label, FeedbackEvent) and label.kind == "label"
    assert isinstance(reference, FeedbackEvent) and reference.kind == "reference"
    assert reference.rating == 0.0  # a corrected answer may come with its rating


@pytest.mark.parametrize(
    ("fields", "reason", "mentions"),
    [
        ({}, "missing_field", "one of"),
        ({"label": "a", "reference": "b"}, "invalid_value", "both"),
        ({"rating": "meh"}, "invalid_value", "$.rating"),
        ({"rating": -0.1}, "out_of_range", "$.rating"),
        ({"reference": 3}, "wrong_type", "$.reference"),
    ],
)
def test_bad_feedback_fails_with_a_reason(fields: dict, reason: str, mentions: str) -> None:
    with pytest.raises(EventError) as err:
        decode(_feedback(**fields))
    assert err.value.reason == reason and mentions in err.value.detail


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
