"""Byte caps on what one event may make the daemon hold (pure logic: daemon.ingest.limits)."""

from __future__ import annotations

import collections

import msgspec

from daemon.events import ChatMessage, FeedbackEvent, InferenceEvent, Output, decode
from daemon.ingest.limits import FieldLimits, cut


def limits() -> tuple[FieldLimits, collections.Counter[str]]:
    counts: collections.Counter[str] = collections.Counter()
    return FieldLimits(64, 16, 4, lambda field: counts.update([field])), counts


def test_cut_never_splits_a_character_and_keeps_short_strings_as_they_are() -> None:
    text = "é" * 100  # two bytes each
    assert len(cut(text, 65).encode()) == 64 and set(cut(text, 65)) == {"é"}
    short = "fits"
    assert cut(short, 16) is short


def test_an_ordinary_event_passes_untouched() -> None:
    lim, counts = limits()
    event = decode(msgspec.json.encode({
        "schema": "inference/v1", "request_id": "r1", "ts": 1, "model": "m",
        "model_version": "1", "latency_ms": 3, "input": {"text": "short"},
        "output": {"label": "pos", "text": "ok"}}))
    assert lim.apply(event) is event and not counts


def test_oversized_fields_are_cut_and_counted() -> None:
    lim, counts = limits()
    event = InferenceEvent(request_id="r" * 100, ts=1.0, model="m", model_version="1",
                           latency_ms=1.0, input={"text": "t" * 1000, "c": "x" * 500,
                                                  "k" * 40: 1.0, "a": 1.0, "b": 2.0},
                           output=Output(label="l" * 50, text="o" * 1000))
    capped = lim.apply(event)
    assert isinstance(capped, InferenceEvent) and capped.input is not None
    assert capped.request_id == "r" * 16
    assert len(capped.input) == 4 and capped.input["text"] == "t" * 64
    assert "k" * 16 in capped.input and capped.input["c"] == "x" * 64 and "b" not in capped.input
    assert capped.output == Output(label="l" * 16, text="o" * 64)
    assert counts == {"request_id": 1, "input.fields": 1, "input.text": 1, "input.key": 1,
                      "input.value": 1, "output.text": 1, "output.label": 1}
    feedback = lim.apply(FeedbackEvent(request_id="r1", ts=1.0, model="m",
                                       reference="ref " * 100))
    assert isinstance(feedback, FeedbackEvent) and feedback.reference == ("ref " * 16)
    assert counts["reference"] == 1


def test_chat_messages_and_params_are_capped_too() -> None:
    lim, counts = limits()
    messages = [ChatMessage(role="user", content=f"turn {i} " + "z" * 200) for i in range(6)]
    event = InferenceEvent(request_id="r", ts=1.0, model="m", model_version="1",
                           latency_ms=1.0, input={"messages": messages},
                           params={"stop": ["s" * 40], "temperature": 0.2})
    capped = lim.apply(event)
    assert isinstance(capped, InferenceEvent) and capped.input and capped.params
    kept = capped.input["messages"]
    assert isinstance(kept, list) and len(kept) == 4  # the latest turns
    assert kept[0].content == ("turn 2 " + "z" * 200)[:64]
    assert capped.params["stop"] == ["s" * 16] and capped.params["temperature"] == 0.2
    assert counts == {"input.messages.items": 1, "input.messages.content": 4,
                      "params.stop.value": 1}
