"""The official ``openai`` client through a real ``lifeguard tap`` process to a real replica
serving a tiny causal LM: answers pass through unchanged, upstream errors too, every request
becomes an event the daemon counts (with TTFT and tokens), and a broker stopped mid-run costs
events (counted on the tap's /metrics), never a request."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from daemon.events import FeedbackEvent, InferenceEvent, decode
from daemon.ingest.broker import LocalBroker, ensure_topics, free_port
from harness.replicas import ReplicaProcess
from tests.procs import DaemonProcess, metric_sum, wait_until
from tests.tap.tap_harness import LM, TapProcess, lm_replica

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TOPIC = "inference"
CHAT = [{"role": "system", "content": "you review gadgets"},
        {"role": "user", "content": "the battery is"}]


@dataclass
class Sent:
    """What the client saw, per request id: the events must say the same."""

    ok: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, tuple[str, int]] = field(default_factory=dict)  # id -> (model, status)
    feedback: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicaProcess]:
    replica = lm_replica(tmp_path_factory.mktemp("tap")).wait_ready()
    try:
        yield replica
    finally:
        replica.stop()


@pytest.fixture(scope="module")
def tap(upstream: ReplicaProcess, broker: LocalBroker,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[TapProcess]:
    ensure_topics(broker.bootstrap, {TOPIC: 1, f"{TOPIC}.dlq": 1})
    process = TapProcess(upstream.url, broker.bootstrap, tmp_path_factory.mktemp("tap-log"))
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def daemon(broker: LocalBroker, tap: TapProcess,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    config = {"kafka": {"bootstrap_servers": [broker.bootstrap], "topics": [TOPIC],
                        "group_id": "tap-e2e", "dead_letter_topic": f"{TOPIC}.dlq"}}
    with DaemonProcess(tmp_path_factory.mktemp("daemon"), config) as process:
        yield process


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="not-checked", max_retries=0)


@pytest.fixture(scope="module")
def sent(tap: TapProcess, daemon: DaemonProcess) -> Sent:
    """One run of mixed traffic through the tap with the official client."""
    client, record = _client(tap.url), Sent()
    for i in range(3):
        rid = f"chat-{i}"
        raw = client.chat.completions.with_raw_response.create(
            model=LM, messages=CHAT, max_tokens=4 + i, extra_headers={"x-request-id": rid})
        answer = raw.parse()
        assert raw.headers["x-request-id"] == rid
        assert answer.usage is not None and answer.choices[0].finish_reason in ("stop", "length")
        record.ok[rid] = {"text": answer.choices[0].message.content, "streamed": False,
                          "tokens_in": answer.usage.prompt_tokens,
                          "tokens_out": answer.usage.completion_tokens}
    for i in range(3):
        rid = f"stream-{i}"
        parts, usage = [], None
        for chunk in client.chat.completions.create(
                model=LM, messages=CHAT, max_tokens=4 + i, stream=True,
                extra_headers={"x-request-id": rid}):
            parts.extend(c.delta.content or "" for c in chunk.choices)
            usage = chunk.usage or usage
        assert usage is not None  # the tap asked the upstream for it
        record.ok[rid] = {"text": "".join(parts), "streamed": True,
                          "tokens_in": usage.prompt_tokens, "tokens_out": usage.completion_tokens}
    completion = client.completions.create(model=LM, prompt="the screen", max_tokens=3,
                                           extra_headers={"x-request-id": "complete-0"})
    assert completion.usage is not None
    record.ok["complete-0"] = {"text": completion.choices[0].text, "streamed": False,
                               "tokens_in": completion.usage.prompt_tokens,
                               "tokens_out": completion.usage.completion_tokens}
    with pytest.raises(openai.NotFoundError, match="not loaded"):
        client.chat.completions.create(model="nope", messages=CHAT,
                                       extra_headers={"x-request-id": "error-404"})
    record.errors["error-404"] = ("nope", 404)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model=LM, messages=CHAT, max_tokens=0, stream=True,
                                       extra_headers={"x-request-id": "error-400"})
    record.errors["error-400"] = (LM, 400)
    answer = httpx.post(tap.url + "/v1/feedback", json={"request_id": "chat-0", "rating": 1.0})
    assert answer.status_code == 202 and answer.json()["model"] == LM  # remembered by the tap
    record.feedback.append("chat-0")
    return record


def test_answers_are_the_upstreams_own(sent: Sent, upstream: ReplicaProcess) -> None:
    direct = _client(upstream.url)
    for i in range(3):
        answer = direct.chat.completions.create(model=LM, messages=CHAT, max_tokens=4 + i)
        assert sent.ok[f"chat-{i}"]["text"] == answer.choices[0].message.content
        assert sent.ok[f"stream-{i}"]["text"] == answer.choices[0].message.content  # greedy
        assert answer.usage is not None
        assert sent.ok[f"stream-{i}"]["tokens_out"] == answer.usage.completion_tokens


@pytest.mark.parametrize("stream", [False, True])
def test_bytes_pass_through_unchanged(tap: TapProcess, upstream: ReplicaProcess,
                                      stream: bool) -> None:
    body = {"model": LM, "messages": CHAT, "max_tokens": 5, "stream": stream,
            "stream_options": {"include_usage": True}} if stream else {
        "model": LM, "messages": CHAT, "max_tokens": 5}
    got = []
    for url in (tap.url, upstream.url):
        response = httpx.post(url + "/v1/chat/completions", json=body,
                              headers={"x-request-id": f"bytes-{stream}"})
        assert response.status_code == 200
        # Only the creation second may differ between the two requests; JSON bodies are
        # compact, SSE chunks are not, so the space after the colon is optional.
        masked, creations = re.subn(rb'"created": ?\d+', b'"created":0', response.content)
        assert creations >= 1
        got.append(masked)
    assert got[0] == got[1]
    assert (b"data: [DONE]" in got[0]) == stream


def test_upstream_errors_pass_through(tap: TapProcess, upstream: ReplicaProcess,
                                      tmp_path: Path) -> None:
    body = {"model": "nope", "messages": CHAT}
    through = httpx.post(tap.url + "/v1/chat/completions", json=body)
    direct = httpx.post(upstream.url + "/v1/chat/completions", json=body)
    assert (through.status_code, through.content) == (direct.status_code, direct.content)
    # Other routes are relayed too (not recorded): the client can list the models.
    assert [m.id for m in _client(tap.url).models.list()] == [LM]
    # No upstream at all: the tap answers 502 in OpenAI's error shape.
    orphan = TapProcess(f"http://127.0.0.1:{free_port()}", None, tmp_path).start()
    try:
        with pytest.raises(openai.APIStatusError) as err:
            _client(orphan.url).chat.completions.create(model=LM, messages=CHAT)
        assert err.value.status_code == 502 and "upstream unreachable" in str(err.value)
    finally:
        orphan.stop()


def test_feedback_without_a_known_request_needs_a_model(tap: TapProcess) -> None:
    unknown = httpx.post(tap.url + "/v1/feedback", json={"request_id": "never", "rating": 1})
    assert unknown.status_code == 400 and "model" in unknown.json()["error"]
    bad = httpx.post(tap.url + "/v1/feedback", json={"request_id": "x", "model": LM,
                                                      "rating": 3})
    assert bad.status_code == 400 and "out_of_range" in bad.json()["error"]


def _topic(broker: LocalBroker, until: Any = None) -> list[InferenceEvent | FeedbackEvent]:
    """Every event on the topic, read with the contract's own validation, until ``until(events)``
    holds and the topic has nothing more."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(TOPIC, bootstrap_servers=broker.bootstrap, group_id=None,
                             auto_offset_reset="earliest")
    events: list[InferenceEvent | FeedbackEvent] = []
    deadline, quiet = time.monotonic() + 20, 0
    while time.monotonic() < deadline and (quiet < 3 or (until and not until(events))):
        batches = consumer.poll(timeout_ms=200)
        quiet = 0 if batches else quiet + 1
        for records in batches.values():
            for message in records:
                event = decode(message.value)
                assert message.key == event.model.encode()
                events.append(event)
    consumer.close()
    return events


def test_events_on_kafka_match_the_requests(sent: Sent, broker: LocalBroker) -> None:
    wanted = set(sent.ok) | set(sent.errors)
    seen = _topic(broker, lambda got: wanted <= {e.request_id for e in got})
    events = {e.request_id: e for e in seen
              if isinstance(e, InferenceEvent) and e.request_id in wanted}
    feedback = [e for e in seen if isinstance(e, FeedbackEvent)]
    assert set(events) == wanted
    for rid, answer in sent.ok.items():
        event = events[rid]
        assert (event.status, event.model, event.model_version) == ("ok", LM, "1")
        assert event.output is not None and event.output.text == answer["text"]
        assert event.output.finish_reason in ("stop", "length")
        assert (event.tokens_in, event.tokens_out) == (answer["tokens_in"], answer["tokens_out"])
        if answer["streamed"]:
            assert event.ttft_ms is not None and 0 < event.ttft_ms <= event.latency_ms
        else:
            assert event.ttft_ms is None
    chat = events["stream-0"]
    assert chat.input is not None and chat.params is not None
    assert [(m.role, m.content) for m in chat.input["messages"]] == [  # type: ignore[union-attr]
        (m["role"], m["content"]) for m in CHAT]
    assert chat.params["max_tokens"] == 4 and chat.params["stream"] is True
    assert events["complete-0"].input == {"prompt": "the screen"}
    for rid, (model, status) in sent.errors.items():
        event = events[rid]
        assert event.status == "error" and event.model == model and event.output is None
        assert event.error is not None and event.error.startswith(f"HTTP {status}")
    assert [(f.request_id, f.model, f.rating) for f in feedback] == [("chat-0", LM, 1.0)]


def test_daemon_counts_the_events(sent: Sent, daemon: DaemonProcess,
                                  broker: LocalBroker) -> None:
    """What the daemon counts is what the tap wrote: every request, its tokens, its TTFT."""
    wanted = set(sent.ok) | set(sent.errors)
    events = [e for e in _topic(broker, lambda got: wanted <= {e.request_id for e in got})
              if isinstance(e, InferenceEvent)]
    ok = [e for e in events if e.model == LM and e.status == "ok"]
    assert {e.request_id for e in ok} >= set(sent.ok)
    wait_until(lambda: daemon.count("lifeguard_events_total", model=LM, status="ok") == len(ok),
               30, 0.5, "the daemon to count the tap's events")
    text = daemon.metrics()
    assert metric_sum(text, "lifeguard_events_total", model=LM, version="1", status="ok") == len(
        ok)
    assert metric_sum(text, "lifeguard_events_total", model=LM, status="error") == 1
    assert metric_sum(text, "lifeguard_events_total", model="nope", status="error") == sum(
        1 for e in events if e.model == "nope")
    assert metric_sum(text, "lifeguard_tokens_total", model=LM, direction="in") == sum(
        e.tokens_in or 0 for e in ok)
    assert metric_sum(text, "lifeguard_tokens_total", model=LM, direction="out") == sum(
        e.tokens_out or 0 for e in ok)
    streamed = [e for e in ok if e.ttft_ms is not None]
    assert len(streamed) >= sum(1 for s in sent.ok.values() if s["streamed"])
    assert metric_sum(text, "lifeguard_inference_ttft_seconds_count", model=LM) == len(streamed)
    assert metric_sum(text, "lifeguard_dead_lettered_messages_total") == 0


def test_a_broker_stopped_mid_run_costs_events_not_requests(
        upstream: ReplicaProcess, tmp_path: Path) -> None:
    with LocalBroker() as doomed:
        ensure_topics(doomed.bootstrap, {TOPIC: 1})
        tap = TapProcess(upstream.url, doomed.bootstrap, tmp_path, "--kafka-timeout-s", "2",
                         "--buffer", "4").start()
        try:
            client = _client(tap.url)
            for i in range(3):
                client.chat.completions.create(model=LM, messages=CHAT, max_tokens=2,
                                               extra_headers={"x-request-id": f"before-{i}"})
            wait_until(lambda: metric_sum(tap.metrics(), "lifeguard_tap_events_total",
                                          outcome="sent") == 3, 20, 0.2, "events sent")
            doomed.stop()
            for i in range(12):  # more than the buffer holds
                stream = client.chat.completions.create(
                    model=LM, messages=CHAT, max_tokens=2, stream=True,
                    extra_headers={"x-request-id": f"after-{i}"})
                assert "".join(c.delta.content or "" for ch in stream for c in ch.choices)

            def settled() -> bool:
                text = tap.metrics()
                lost = metric_sum(text, "lifeguard_tap_events_lost_total")
                return lost > 0 and lost + metric_sum(
                    text, "lifeguard_tap_events_total", outcome="sent") == 15
            wait_until(settled, 30, 0.5, "every event sent or counted lost")
            text = tap.metrics()
            assert metric_sum(text, "lifeguard_tap_requests_total", status="ok") == 15
            assert metric_sum(text, "lifeguard_tap_requests_total", status="error") == 0
        finally:
            tap.stop()
