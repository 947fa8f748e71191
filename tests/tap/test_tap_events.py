"""The tap's reading of OpenAI-compatible traffic (pure logic): streams cut anywhere, answers,
privacy, and events the contract accepts."""

from __future__ import annotations

import json
import random

import pytest

from daemon.events import EventError, FeedbackEvent, InferenceEvent, decode, encode
from deploy.tap_events import (
    Privacy,
    StreamReader,
    feedback_event,
    inference_event,
    read_answer,
    request_input,
)


def _sse(payloads: list[object]) -> bytes:
    lines = [b"data: " + json.dumps(p, ensure_ascii=False).encode() + b"\r\n\r\n"
             for p in payloads]
    return b"".join(lines) + b"data: [DONE]\n\n"


CHAT_STREAM = _sse([
    {"model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}],
     "usage": None},
    {"model": "m", "choices": [{"index": 0, "delta": {"content": "héllo"}}], "usage": None},
    {"model": "m", "choices": [{"index": 1, "delta": {"content": "other choice"}}]},
    {"model": "m", "choices": [{"index": 0, "delta": {"content": " wörld"}}], "usage": None},
    {"model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
    {"model": "m", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}},
])


@pytest.mark.parametrize("seed", range(5))
def test_stream_reader_gets_the_same_answer_however_the_bytes_are_cut(seed: int) -> None:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(CHAT_STREAM)), 12))
    reader = StreamReader()
    for i, (start, end) in enumerate(zip([0, *cuts], [*cuts, len(CHAT_STREAM)], strict=True)):
        reader.feed(CHAT_STREAM[start:end], now=float(i))
    answer = reader.finish()
    assert answer.text == "héllo wörld" and answer.finish_reason == "length"
    assert (answer.tokens_in, answer.tokens_out, answer.model) == (7, 2, "m")
    assert reader.done  # the terminal [DONE] went by: the client has the whole answer
    # The first token arrives with the end of the first line with text, not with the
    # role-only opening chunk.
    line_end = CHAT_STREAM.index(b"\n", CHAT_STREAM.index("héllo".encode()))
    assert answer.first_token_at == next(i for i, end in enumerate([*cuts, len(CHAT_STREAM)])
                                         if end > line_end)


def test_completion_stream_without_usage_counts_chunks_as_tokens() -> None:
    reader = StreamReader()
    reader.feed(_sse([{"choices": [{"index": 0, "text": t, "finish_reason": None}]}
                      for t in ("a", "b", "c")]
                     + [{"choices": [{"index": 0, "text": "", "finish_reason": "stop"}]}]))
    assert reader.done
    answer = reader.finish()
    assert (answer.text, answer.tokens_out, answer.tokens_in) == ("abc", 3, None)
    assert answer.finish_reason == "stop"


def test_a_stream_cut_before_done_is_not_done() -> None:
    """A client that leaves before [DONE] left mid-answer: the tap records an error."""
    reader = StreamReader()
    reader.feed(_sse([{"choices": [{"index": 0, "text": "a", "finish_reason": None}]}])
                .removesuffix(b"data: [DONE]\n\n"))
    assert not reader.done and reader.finish().text == "a"


def test_read_answer_of_chat_and_completion_bodies() -> None:
    chat = read_answer(json.dumps({
        "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                                   "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1}}).encode())
    assert (chat.text, chat.finish_reason, chat.tokens_in, chat.tokens_out) == ("hi", "stop", 3, 1)
    text = read_answer(b'{"choices": [{"text": "yo", "finish_reason": "length"}]}')
    assert (text.text, text.finish_reason, text.tokens_out) == ("yo", "length", None)
    assert read_answer(b"not json").text is None


def test_privacy_truncates_or_drops_every_text() -> None:
    body = {"model": "m", "messages": [
        {"role": "developer", "content": "secret system prompt"},
        {"role": "user", "content": [{"type": "text", "text": "look at "},
                                     {"type": "image_url", "image_url": {"url": "x"}}]},
        {"role": "robot", "content": "unknown roles are left out"}]}
    full = request_input(body, Privacy())
    assert full is not None and [(m.role, m.content) for m in full["messages"]] == [  # type: ignore[union-attr]
        ("system", "secret system prompt"), ("user", "look at [image_url]")]
    short = request_input(body, Privacy("truncate", 6))
    assert [m.content for m in short["messages"]] == ["secret", "look a"]  # type: ignore[index,union-attr]
    dropped = request_input(body, Privacy("drop"))
    assert [m.content for m in dropped["messages"]] == [None, None]  # type: ignore[index,union-attr]
    assert request_input({"prompt": ["a", "b"]}, Privacy()) == {"prompt": "a\nb"}
    assert request_input({"prompt": "p"}, Privacy("drop")) == {}


def test_inference_event_round_trips_through_the_contract() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2,
            "max_tokens": 5, "stop": ["\n"], "stream": True, "logit_bias": {"1": 2}}
    reader = StreamReader()
    reader.feed(CHAT_STREAM, now=10.25)
    event = inference_event(request_id="r1", model="m", version="3", replica="h:1", body=body,
                            answer=reader.finish(), started=10.0, ended=10.5, error=None,
                            privacy=Privacy("truncate", 3))
    decoded = decode(encode(event))
    assert isinstance(decoded, InferenceEvent) and decoded == event
    assert decoded.ttft_ms == pytest.approx(250.0) and decoded.latency_ms == pytest.approx(500.0)
    assert decoded.params == {"temperature": 0.2, "max_tokens": 5, "stop": ["\n"],
                              "stream": True}
    assert decoded.output is not None and decoded.output.text == "hél"
    assert (decoded.tokens_in, decoded.tokens_out) == (7, 2)
    failed = inference_event(request_id="r2", model="", version="", replica=None, body={},
                             answer=reader.finish(), started=1.0, ended=1.1,
                             error="HTTP 500", privacy=Privacy())
    assert failed.status == "error" and failed.output is None
    assert (failed.model, failed.model_version) == ("unknown", "unknown")


def test_feedback_is_validated_by_the_contract() -> None:
    event = feedback_event({"request_id": "r1", "rating": 0.5}, "m", Privacy())
    assert isinstance(event, FeedbackEvent) and event.rating == 0.5 and event.model == "m"
    cut = feedback_event({"request_id": "r1", "reference": "abcdef"}, "m", Privacy("truncate", 2))
    assert cut.reference == "ab"
    for body, reason in [({"request_id": "r1"}, "missing_field"),
                         ({"request_id": "r1", "rating": 2}, "out_of_range"),
                         ({"rating": 0.5}, "missing_field"),
                         ({"request_id": "r1", "label": ["x"]}, "wrong_type")]:
        with pytest.raises(EventError) as err:
            feedback_event(body, "m", Privacy())
        assert err.value.reason == reason, (body, err.value.detail)
