"""Ingest throughput: the daemon's whole path versus a plain kafka-python json.loads loop.

Both read the same topic on a local broker in one run. The daemon's path is the real one
(decode + validate with msgspec, dead-letter check, apply to every sink, metrics, commit);
the baseline is the naive consumer: ``for msg in consumer: json.loads(msg.value)``.
Clock: from the first message each one sees to the last, so group-join time is excluded.

    .venv/bin/python bench/ingest.py [--events 200000]
"""

from __future__ import annotations

import sys
from pathlib import Path

# This directory holds bench/actions.py, which would shadow the `actions` package: the project
# root goes first on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import random
import time

from daemon.app import Daemon
from daemon.config import parse_config
from daemon.ingest.broker import LocalBroker, ensure_topics
from harness.traffic import encoded, inference_record, make_producer, produce

TOPIC = "inference"


def plain_consumer(bootstrap: str, total: int) -> float:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(TOPIC, bootstrap_servers=bootstrap, group_id="bench-plain",
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             session_timeout_ms=6000, heartbeat_interval_ms=1000)
    start = 0.0
    for seen, message in enumerate(consumer, start=1):
        if seen == 1:
            start = time.perf_counter()
        json.loads(message.value)
        if seen == total:
            break
    elapsed = time.perf_counter() - start
    consumer.close()
    return total / elapsed


def daemon_path(bootstrap: str, total: int) -> float:
    config = parse_config({
        "kafka": {"bootstrap_servers": [bootstrap], "group_id": "bench-daemon",
                  "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000},
        "api": {"port": 0},
        "models": [{"name": f"model-{i}"} for i in range(4)],
    })
    daemon = Daemon(config)
    daemon.start()
    events = daemon.metrics.events
    start = 0.0
    try:
        while True:
            seen = sum(sample.value for metric in events.collect() for sample in metric.samples
                       if sample.name.endswith("_total"))
            if seen and not start:
                start = time.perf_counter()
            if seen >= total:
                return total / (time.perf_counter() - start)
            time.sleep(0.002)
    finally:
        daemon.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    rng = random.Random(7)
    with LocalBroker() as broker:
        ensure_topics(broker.bootstrap, {TOPIC: 4, "lifeguard.dead-letter": 1})
        producer = make_producer(broker.bootstrap)
        records = (inference_record(rng, model=f"model-{i % 4}", version="3")
                   for i in range(args.events))
        produce(producer, TOPIC, encoded(records))
        producer.close()
        print(f"produced {args.events} events to {TOPIC} (4 partitions)")
        plain = plain_consumer(broker.bootstrap, args.events)
        print(f"plain kafka-python + json.loads: {plain:,.0f} ev/s")
        ours = daemon_path(broker.bootstrap, args.events)
        print(f"lifeguard ingest path:           {ours:,.0f} ev/s")
    print(f"ingest ratio {ours / plain:.2f} (daemon {ours:,.0f} ev/s, plain {plain:,.0f} ev/s)")


if __name__ == "__main__":
    main()
