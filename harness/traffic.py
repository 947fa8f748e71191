"""Synthetic inference traffic: valid events, deliberately malformed ones, and a producer.

Used by the benchmarks and the tests; the scenario simulator (simulator/) drives the demo.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kafka import KafkaProducer

WORDS = (
    "great", "battery", "screen", "fast", "slow", "broken", "love", "hate", "cheap", "sturdy",
    "quiet", "loud", "warm", "cold", "fits", "returns", "shipping", "refund", "works", "fails",
    "recommend", "avoid", "daily", "gift",
)


def inference_record(rng: random.Random, model: str = "sentiment", version: str = "1",
                     replica: str = "replica-0", ts_ms: float | None = None,
                     error_rate: float = 0.01, latency_ms: float = 40.0) -> dict[str, object]:
    words = rng.choices(WORDS, k=rng.randint(4, 24))
    failed = rng.random() < error_rate
    record: dict[str, object] = {
        "schema": "inference/v1",
        "request_id": uuid.UUID(int=rng.getrandbits(128)).hex,
        "ts": int(ts_ms if ts_ms is not None else time.time() * 1000),
        "model": model,
        "model_version": version,
        "replica": replica,
        "latency_ms": round(rng.lognormvariate(0, 0.35) * latency_ms, 3),
        "tokens_in": len(words),
        "tokens_out": 1,
        "status": "error" if failed else "ok",
        "input": {"text": " ".join(words)},
    }
    if failed:
        record["error"] = "upstream timeout"
    else:
        record["output"] = {"label": rng.choice(["negative", "positive"]),
                            "score": round(rng.uniform(0.5, 1.0), 4)}
    return record


def feedback_record(request_id: str, model: str, label: str,
                    ts_ms: float | None = None) -> dict[str, object]:
    return {"schema": "feedback/v1", "request_id": request_id, "model": model, "label": label,
            "ts": int(ts_ms if ts_ms is not None else time.time() * 1000)}


def malformed_messages(rng: random.Random, n: int, max_bytes: int) -> list[tuple[str, bytes]]:
    """``n`` invalid messages cycling through every kind, each with the reason it must get."""
    good = json.dumps(inference_record(rng)).encode()
    kinds: list[tuple[str, bytes]] = [
        ("bad_json", good[: len(good) // 2]),
        ("wrong_type", json.dumps({**json.loads(good), "latency_ms": "fast"}).encode()),
        ("missing_field", json.dumps({k: v for k, v in json.loads(good).items()
                                      if k != "request_id"}).encode()),
        ("too_large", json.dumps({**json.loads(good),
                                  "input": {"text": "x" * (max_bytes + 10)}}).encode()),
        ("invalid_utf8", good.replace(b'"input": {"text": "', b'"input": {"text": "\xff\xfe')),
        ("unknown_schema", json.dumps({**json.loads(good), "schema": "inference/v9"}).encode()),
        ("out_of_range", json.dumps({**json.loads(good), "latency_ms": -3}).encode()),
        ("not_an_object", b"[1, 2, 3]"),
    ]
    return [kinds[i % len(kinds)] for i in range(n)]


def make_producer(bootstrap: str | list[str], **options: object) -> KafkaProducer:
    from kafka import KafkaProducer

    return KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, batch_size=256 * 1024,
                         max_request_size=8 << 20, **options)


def produce(producer: KafkaProducer, topic: str, messages: Iterable[tuple[bytes, bytes]]) -> int:
    """Send (key, value) pairs and wait until all are acknowledged; returns how many."""
    count = 0
    for key, value in messages:
        producer.send(topic, key=key, value=value)
        count += 1
    producer.flush(timeout=60)
    return count


def encoded(records: Iterable[dict[str, object]]) -> Iterator[tuple[bytes, bytes]]:
    for record in records:
        yield str(record["model"]).encode(), json.dumps(record).encode()
