"""Hostile event contents at the real daemon. A far-future event: its time is clamped to the
broker's record time plus the allowed skew, so it evicts no window, expires no pending label,
and does not hide a model going silent. A 100 kB text: cut to its cap and counted."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from procs import DaemonProcess, metric_sum, wait_until

from daemon.ingest.broker import LocalBroker, ensure_topics
from harness.traffic import encoded, inference_record, make_producer, produce

pytestmark = pytest.mark.integration
TOPIC = "skew"
YEAR_MS = 365 * 24 * 3600 * 1000


def test_a_far_future_event_neither_evicts_nor_expires_nor_pins_the_age(
    broker: LocalBroker, tmp_path: Path,
) -> None:
    ensure_topics(broker.bootstrap, {TOPIC: 1, f"{TOPIC}.dlq": 1})
    rng = random.Random(4)
    config = {"kafka": {"bootstrap_servers": [broker.bootstrap], "topics": [TOPIC],
                        "group_id": "skew", "dead_letter_topic": f"{TOPIC}.dlq",
                        "max_event_skew": "1s", "session_timeout_ms": 6000,
                        "heartbeat_interval_ms": 1000},
              "models": [{"name": "sentiment", "window": {"max_age": "1h"},
                          "labels": {"ttl": "1h"}}]}
    producer = make_producer(broker.bootstrap)
    with DaemonProcess(tmp_path, config) as daemon:
        produce(producer, TOPIC, encoded(inference_record(rng) for _ in range(100)))
        wait_until(lambda: daemon.count("lifeguard_window_events", model="sentiment") == 100, 30)
        future = inference_record(rng, ts_ms=time.time() * 1000 + 10 * YEAR_MS)
        produce(producer, TOPIC, encoded([future]))
        wait_until(lambda: daemon.count("lifeguard_events_total") == 101, 30)
        huge = inference_record(rng)
        huge["input"] = {"text": "word " * 20_000}  # 100 kB: cut to kafka.max_text_bytes
        produce(producer, TOPIC, encoded([huge]))
        wait_until(lambda: daemon.count("lifeguard_events_total") == 102, 30)
        time.sleep(2.5)  # past the 1 s skew the clamped event was allowed
        text = daemon.metrics()
    producer.close()
    assert metric_sum(text, "lifeguard_clamped_events_total", direction="future") == 1
    assert metric_sum(text, "lifeguard_truncated_fields_total", field="input.text") == 1
    assert metric_sum(text, "lifeguard_window_events", model="sentiment") == 102
    assert metric_sum(text, "lifeguard_window_evicted_events_total", model="sentiment") == 0
    assert metric_sum(text, "lifeguard_labels_expired_total", model="sentiment") == 0
    assert metric_sum(text, "lifeguard_labels_pending", model="sentiment",
                      buffer="inference") == 102
    # Ten years ahead would read 0 for ten years; clamped, the age moves on within seconds.
    assert metric_sum(text, "lifeguard_last_event_age_seconds", model="sentiment") > 1.0
