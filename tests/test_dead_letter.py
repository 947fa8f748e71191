"""A dead-letter topic that refuses writes, against a real broker and the daemon process: the
partition is paused and reported, nothing past the owed record is committed or applied twice,
and once the topic takes writes again the partition resumes and nothing is lost."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import httpx
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka_gate import kafka_gate
from procs import DaemonProcess, metric_sum, wait_until

from daemon.ingest.broker import LocalBroker, ensure_topics
from daemon.ingest.dead_letter import DeadLetter, DeadLetterSender
from harness.traffic import encoded, inference_record, make_producer, produce

pytestmark = pytest.mark.integration
TOPIC = "dl-events"
DLQ = "dl-events.dlq"


def _committed(bootstrap: str, group: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             enable_auto_commit=False)
    try:
        return consumer.committed(TopicPartition(TOPIC, 0)) or 0
    finally:
        consumer.close()


def test_a_dead_letter_topic_that_refuses_writes_pauses_the_partition_and_loses_nothing(
    tmp_path: Path,
) -> None:
    rng = random.Random(14)
    with kafka_gate() as gate:
        ensure_topics(gate.bootstrap, {TOPIC: 1, DLQ: 1})
        gate.refuse = DLQ
        config = {"kafka": {"bootstrap_servers": [gate.bootstrap], "topics": [TOPIC],
                            "group_id": "dl", "dead_letter_topic": DLQ, "create_topics": False,
                            "dead_letter_retries": 2, "dead_letter_backoff": "0.2s",
                            "dead_letter_max_backoff": "1s", "session_timeout_ms": 6000,
                            "heartbeat_interval_ms": 1000}}
        producer = make_producer(gate.bootstrap)
        bad = b'{"schema": "inference/v1", "request_id": "poison"'
        with DaemonProcess(tmp_path, config) as daemon:
            produce(producer, TOPIC, encoded(inference_record(rng) for _ in range(300)))
            produce(producer, TOPIC, [(b"sentiment", bad)])  # offset 300
            produce(producer, TOPIC, encoded(inference_record(rng) for _ in range(200)))

            def paused() -> bool:
                r = httpx.get(daemon.url + "/healthz", timeout=5)
                return r.status_code == 503 and "refuses writes" in r.json()["detail"]

            wait_until(paused, 60, 0.2, "/healthz to report the paused partition")
            assert "dl-events:0 at offset 300" in httpx.get(daemon.url + "/healthz").text
            text = daemon.metrics()
            assert metric_sum(text, "lifeguard_paused_partitions") == 1
            assert metric_sum(text, "lifeguard_dead_lettered_messages_total") == 0
            # What the poll that met the owed record held was applied once (300, or 500 when
            # the three sends came in one poll), and stays so while retries go on; what
            # arrives now waits behind the pause.
            applied = metric_sum(text, "lifeguard_events_total")
            assert applied in (300, 500)
            produce(producer, TOPIC, encoded(inference_record(rng) for _ in range(100)))
            time.sleep(3.0)  # several retry cycles at the 1 s ceiling
            assert daemon.count("lifeguard_events_total") == applied
            assert _committed(gate.bootstrap, "dl") == 300  # nothing past the owed record
            assert gate.refused >= 2

            gate.refuse = None  # the topic takes writes again
            wait_until(lambda: httpx.get(daemon.url + "/healthz").status_code == 200, 30, 0.2,
                       "/healthz to recover")
            wait_until(lambda: daemon.count("lifeguard_events_total") >= 600, 30)
            time.sleep(1.0)
            text = daemon.metrics()
            assert metric_sum(text, "lifeguard_events_total") == 600
            assert metric_sum(text, "lifeguard_paused_partitions") == 0
            assert metric_sum(text, "lifeguard_dead_lettered_messages_total",
                              reason="bad_json") == 1
            wait_until(lambda: _committed(gate.bootstrap, "dl") == 601, 15, 0.2, "commit")
        producer.close()

        dlq = KafkaConsumer(bootstrap_servers=gate.bootstrap, auto_offset_reset="earliest",
                            consumer_timeout_ms=5000)
        dlq.assign([TopicPartition(DLQ, 0)])
        letters = list(dlq)
        dlq.close()
    (letter,) = {json.dumps([m.value.decode(), sorted(m.headers)], default=repr): m
                 for m in letters}.values()  # retried sends may repeat; one distinct letter
    headers = dict(letter.headers)
    assert letter.value == bad  # the original bytes
    assert headers["lifeguard.source.offset"] == b"300"  # its own offset
    assert headers["lifeguard.reason"] == b"bad_json"


def test_a_letter_too_large_for_a_produce_request_is_cut_not_refused_forever(
    broker: LocalBroker,
) -> None:
    from kafka.consumer.fetcher import ConsumerRecord

    ensure_topics(broker.bootstrap, {"cut.dlq": 1})

    def producer() -> KafkaProducer:
        return KafkaProducer(bootstrap_servers=[broker.bootstrap], max_request_size=1 << 20)

    sender = DeadLetterSender(producer, "cut.dlq", 1 << 20)
    huge = b"x" * (3 << 20)
    record = ConsumerRecord("src", 2, -1, 41, 0, 0, b"k" * 5000, huge, [("trace", b"t1")],
                            None, len(huge), -1, -1)
    try:
        assert sender.send([DeadLetter(record, "too_large", "3 MiB")]) == [None]
    finally:
        sender.close()
    dlq = KafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                        consumer_timeout_ms=2000)
    dlq.assign([TopicPartition("cut.dlq", 0)])
    (letter,) = list(dlq)
    dlq.close()
    headers = dict(letter.headers)
    assert headers["lifeguard.truncated"] == f"key=5000 value={3 << 20}".encode()
    assert headers["lifeguard.source.offset"] == b"41" and headers["trace"] == b"t1"
    assert huge.startswith(letter.value) and 0 < len(letter.value) < 1 << 20


def test_ensure_topics_connects_with_the_consumers_client_options(broker: LocalBroker) -> None:
    from kafka import KafkaAdminClient

    ensure_topics(broker.bootstrap, {"opts-a": 2}, client_options={
        "security_protocol": "PLAINTEXT", "fetch_max_bytes": 1 << 20, "client_id": "ops"})
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        assert "opts-a" in admin.list_topics()
    finally:
        admin.close()
