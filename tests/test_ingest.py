"""Ingest against a real broker and the real daemon process: nothing lost, nothing twice."""

from __future__ import annotations

import collections
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition
from procs import DaemonProcess, metric_sum, wait_until

from daemon.ingest.broker import LocalBroker, ensure_topics
from harness.traffic import encoded, inference_record, make_producer, malformed_messages, produce

pytestmark = pytest.mark.integration
MAX_BYTES = 4096
GROUP_TIMEOUTS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


def _config(bootstrap: str, topic: str, group: str, **kafka: object) -> dict:
    return {"kafka": {"bootstrap_servers": [bootstrap], "topics": [topic], "group_id": group,
                      "dead_letter_topic": f"{topic}.dlq", "max_message_bytes": MAX_BYTES,
                      "partitions": 3, **GROUP_TIMEOUTS, **kafka}}


def _send_tracking(bootstrap: str, topic: str,
                   messages: list[tuple[bytes, bytes]]) -> dict[int, int]:
    """Produce and return the end offset per partition."""
    producer = make_producer(bootstrap)
    futures = [producer.send(topic, key=k, value=v) for k, v in messages]
    producer.flush(60)
    ends: dict[int, int] = collections.defaultdict(int)
    for future in futures:
        meta = future.get(10)
        ends[meta.partition] = max(ends[meta.partition], meta.offset + 1)
    producer.close()
    return dict(ends)


def _committed(bootstrap: str, topic: str, group: str, partitions: list[int]) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) or 0 for p in partitions}
    finally:
        consumer.close()


def test_valid_events_counted_once_and_malformed_dead_lettered(broker: LocalBroker,
                                                               tmp_path: Path) -> None:
    topic = "ingest-exact"
    ensure_topics(broker.bootstrap, {topic: 3, f"{topic}.dlq": 1})
    rng = random.Random(11)
    valid = list(encoded(inference_record(rng, model=f"model-{i % 3}") for i in range(10_000)))
    malformed = malformed_messages(rng, 200, MAX_BYTES)
    assert len({reason for reason, _ in malformed}) == 8  # every kind of bad message
    messages = valid[:]
    for i, (_, value) in enumerate(malformed):  # spread the bad ones through the stream
        messages.insert((i * 53) % len(messages), (b"model-0", value))
    _send_tracking(broker.bootstrap, topic, messages)

    with DaemonProcess(tmp_path, _config(broker.bootstrap, topic, "exact")) as daemon:
        wait_until(lambda: daemon.count("lifeguard_events_total") >= 10_000
                   and daemon.count("lifeguard_dead_lettered_messages_total") >= 200, 60)
        time.sleep(1.5)  # anything counted twice would show up by now
        text = daemon.metrics()
    assert metric_sum(text, "lifeguard_events_total") == 10_000
    for model in range(3):
        produced = sum(1 for k, _ in valid if k == f"model-{model}".encode())
        assert metric_sum(text, "lifeguard_events_total", model=f"model-{model}") == produced
    assert metric_sum(text, "lifeguard_dead_lettered_messages_total") == 200

    dlq = KafkaConsumer(f"{topic}.dlq", bootstrap_servers=broker.bootstrap,
                        auto_offset_reset="earliest", consumer_timeout_ms=5000,
                        group_id="dlq-reader", **GROUP_TIMEOUTS)
    letters = list(dlq)
    dlq.close()
    assert len(letters) == 200
    sent_values = collections.Counter(value for _, value in malformed)
    by_reason: collections.Counter[str] = collections.Counter()
    for letter in letters:
        headers = {k: v.decode() for k, v in letter.headers}
        assert headers["lifeguard.source.topic"] == topic
        assert int(headers["lifeguard.source.offset"]) >= 0
        assert headers["lifeguard.error"]
        assert sent_values[letter.value] > 0, "dead-lettered message is not one we sent"
        by_reason[headers["lifeguard.reason"]] += 1
    assert by_reason == collections.Counter(reason for reason, _ in malformed)


def test_sigterm_exits_zero_with_every_offset_committed(broker: LocalBroker,
                                                        tmp_path: Path) -> None:
    topic = "ingest-sigterm"
    ensure_topics(broker.bootstrap, {topic: 3, f"{topic}.dlq": 1})
    rng = random.Random(2)
    daemon = DaemonProcess(tmp_path, _config(broker.bootstrap, topic, "sigterm")).start()
    try:
        ends = _send_tracking(broker.bootstrap, topic, list(encoded(
            inference_record(rng, model=f"m{i % 3}") for i in range(3000))))
        wait_until(lambda: daemon.count("lifeguard_events_total") >= 3000, 60)
        daemon.signal(signal.SIGTERM)
        started = time.monotonic()
        assert daemon.wait(15) == 0
        assert time.monotonic() - started < 5
    finally:
        daemon.kill()
    assert _committed(broker.bootstrap, topic, "sigterm", list(ends)) == ends


def test_sigterm_mid_stream_commits_what_it_applied(broker: LocalBroker, tmp_path: Path) -> None:
    topic = "ingest-sigterm-busy"
    ensure_topics(broker.bootstrap, {topic: 1, f"{topic}.dlq": 1})
    rng = random.Random(4)
    daemon = DaemonProcess(tmp_path, _config(broker.bootstrap, topic, "busy",
                                             max_batch=200)).start()
    stop = threading.Event()

    def trickle() -> None:
        producer = make_producer(broker.bootstrap)
        while not stop.is_set():
            produce(producer, topic, encoded(inference_record(rng) for _ in range(200)))
        producer.close()

    sender = threading.Thread(target=trickle)
    sender.start()
    try:
        wait_until(lambda: daemon.count("lifeguard_events_total") >= 2000, 60)
        counted_before = daemon.count("lifeguard_events_total")
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(15) == 0
    finally:
        stop.set()
        sender.join()
        daemon.kill()
    committed = _committed(broker.bootstrap, topic, "busy", [0])[0]
    assert committed >= counted_before


def test_kill_9_loses_nothing_and_repeats_at_most_one_batch(broker: LocalBroker,
                                                            tmp_path: Path) -> None:
    topic = "ingest-kill"
    ensure_topics(broker.bootstrap, {topic: 3})
    out = tmp_path / "applied.txt"
    rng = random.Random(9)
    records = [inference_record(rng, model=f"m{i % 3}") for i in range(30_000)]
    sent_ids = {str(r["request_id"]) for r in records}
    max_batch = 500
    first = _child_for(topic, broker.bootstrap, out, max_batch)
    try:
        producer = make_producer(broker.bootstrap)
        for start in range(0, len(records), 2000):  # a stream, not one burst
            produce(producer, topic, encoded(records[start:start + 2000]))
            time.sleep(0.05)
        producer.close()
        wait_until(lambda: out.exists() and len(out.read_text().split()) > 5000, 60)
        first.kill()  # SIGKILL: no commit, no cleanup
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    applied_by_first = out.read_text().split()
    assert len(applied_by_first) < len(records), "killed too late to test anything"
    second = _child_for(topic, broker.bootstrap, out, max_batch)
    try:
        wait_until(lambda: sent_ids <= set(out.read_text().split()), 90,
                   what="every event applied after the restart")
        second.send_signal(signal.SIGTERM)
        assert second.wait(15) == 0
    finally:
        if second.poll() is None:
            second.kill()
    applied = out.read_text().split()
    assert set(applied) == sent_ids
    duplicates = len(applied) - len(set(applied))
    assert duplicates <= max_batch


def _child_for(topic: str, bootstrap: str, out: Path, max_batch: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(Path(__file__).parent / "ingest_child.py"),
                             "--bootstrap", bootstrap, "--out", str(out), "--topic", topic,
                             "--max-batch", str(max_batch)])


def test_daemon_survives_a_broker_restart(tmp_path: Path) -> None:
    topic = "ingest-restart"
    first = LocalBroker().start()
    port = first.port
    ensure_topics(first.bootstrap, {topic: 1, f"{topic}.dlq": 1})
    rng = random.Random(6)
    daemon = DaemonProcess(tmp_path, _config(first.bootstrap, topic, "restart",
                                             create_topics=True)).start()
    second = None
    try:
        _send_tracking(first.bootstrap, topic, list(encoded(
            inference_record(rng) for _ in range(1000))))
        wait_until(lambda: daemon.count("lifeguard_events_total") >= 1000, 60)
        first.stop()
        time.sleep(2)
        assert daemon.proc is not None and daemon.proc.poll() is None
        second = LocalBroker(port=port).start()  # memory storage: it comes back empty
        ensure_topics(second.bootstrap, {topic: 1, f"{topic}.dlq": 1})
        _send_tracking(second.bootstrap, topic, list(encoded(
            inference_record(rng) for _ in range(500))))
        wait_until(lambda: daemon.count("lifeguard_events_total") >= 1500, 90,
                   what="events produced after the restart")
        assert daemon.count("lifeguard_events_total") == 1500
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(15) == 0
    finally:
        daemon.kill()
        first.stop()
        if second is not None:
            second.stop()


def test_restart_rebuilds_windows_by_replay_without_counting_twice(broker: LocalBroker,
                                                                  tmp_path: Path) -> None:
    from daemon.app import Daemon
    from daemon.config import parse_config

    topic = "ingest-replay"
    ensure_topics(broker.bootstrap, {topic: 1, f"{topic}.dlq": 1})
    rng = random.Random(8)
    _send_tracking(broker.bootstrap, topic, list(encoded(
        inference_record(rng, model="sentiment") for _ in range(2000))))

    def daemon(replay: int) -> Daemon:
        config = _config(broker.bootstrap, topic, "replay", replay_messages=replay)
        config["api"] = {"port": 0}
        config["state"] = {"path": str(tmp_path / "state.db")}
        config["models"] = [{"name": "sentiment", "window": {"size": 5000}}]
        return Daemon(parse_config(config))

    def counted(d: Daemon, name: str) -> float:
        return sum(s.value for m in d.registry.collect() for s in m.samples if s.name == name)

    first = daemon(0)
    first.start()
    try:
        wait_until(lambda: counted(first, "lifeguard_events_total") >= 2000, 60)
    finally:
        first.stop()
    second = daemon(500)
    second.start()
    try:
        wait_until(lambda: counted(second, "lifeguard_replayed_events_total") >= 500, 60,
                   what="the replay of committed history")
        windows = second.monitoring.windows.get("sentiment")
        assert windows is not None and len(windows.current["1"].rows) == 500
        assert counted(second, "lifeguard_events_total") == 0  # history is not counted again
        _send_tracking(broker.bootstrap, topic, list(encoded(
            inference_record(rng, model="sentiment") for _ in range(100))))
        wait_until(lambda: counted(second, "lifeguard_events_total") >= 100, 60)
        time.sleep(1)
        assert counted(second, "lifeguard_events_total") == 100
        assert counted(second, "lifeguard_replayed_events_total") == 500
        assert len(windows.current["1"].rows) == 600
    finally:
        second.stop()


def test_chat_events_are_applied_and_bad_chat_shapes_dead_lettered(broker: LocalBroker,
                                                                   tmp_path: Path) -> None:
    import json

    topic = "ingest-chat"
    ensure_topics(broker.bootstrap, {topic: 1, f"{topic}.dlq": 1})
    chat = {"schema": "inference/v1", "request_id": "c-1", "ts": int(time.time() * 1000),
            "model": "support", "model_version": "1", "latency_ms": 820.0, "ttft_ms": 95.0,
            "tokens_in": 12, "tokens_out": 40, "params": {"temperature": 0.2, "max_tokens": 40},
            "input": {"messages": [{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "how do I reset my router?"}]},
            "output": {"text": "Hold the pin for ten seconds.", "finish_reason": "length"}}
    bad = {**chat, "request_id": "c-2", "input": {"messages": [{"role": "robot",
                                                               "content": "beep"}]}}
    rating = {"schema": "feedback/v1", "request_id": "c-1", "ts": chat["ts"],
              "model": "support", "rating": "up"}
    _send_tracking(broker.bootstrap, topic, [(b"support", json.dumps(m).encode())
                                             for m in (chat, bad, rating)])
    with DaemonProcess(tmp_path, _config(broker.bootstrap, topic, "chat")) as daemon:
        wait_until(lambda: daemon.count("lifeguard_events_total") >= 1
                   and daemon.count("lifeguard_dead_lettered_messages_total") >= 1, 60)
        text = daemon.metrics()
    assert metric_sum(text, "lifeguard_events_total", model="support") == 1
    assert metric_sum(text, "lifeguard_dead_lettered_messages_total",
                      reason="invalid_value") == 1
    assert metric_sum(text, "lifeguard_tokens_total", model="support", direction="out") == 40
    dlq = KafkaConsumer(f"{topic}.dlq", bootstrap_servers=broker.bootstrap,
                        auto_offset_reset="earliest", consumer_timeout_ms=5000,
                        group_id="chat-dlq-reader", **GROUP_TIMEOUTS)
    letters = list(dlq)
    dlq.close()
    assert len(letters) == 1 and json.loads(letters[0].value)["request_id"] == "c-2"
    headers = {k: v.decode() for k, v in letters[0].headers}
    assert headers["lifeguard.reason"] == "invalid_value" and "role" in headers["lifeguard.error"]
