"""Synthetic inference traffic: valid events, deliberately malformed ones, and a producer.

Used by the demo, the benchmarks and the tests; the full scenario simulator builds on it.
"""

from __future__ import annotations

import json
import random
import threading
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


class TrafficGenerator:
    """Produces steady synthetic traffic from a thread at a target rate (for the demo)."""

    def __init__(self, bootstrap: str, topic: str, rate_per_s: float, models: list[str],
                 invalid_share: float = 0.005, seed: int = 0) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.rate = rate_per_s
        self.models = models
        self.invalid_share = invalid_share
        self.rng = random.Random(seed)
        self.sent = 0
        self.sent_invalid = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def start(self) -> TrafficGenerator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        producer = make_producer(self.bootstrap)
        tick = 0.1
        invalid = malformed_messages(self.rng, 64, 1 << 20)
        try:
            while not self._stop.wait(tick):
                for _ in range(max(1, int(self.rate * tick))):
                    model = self.rng.choice(self.models)
                    if self.rng.random() < self.invalid_share:
                        producer.send(self.topic, key=model.encode(),
                                      value=self.rng.choice(invalid)[1])
                        self.sent_invalid += 1
                    else:
                        record = inference_record(self.rng, model=model,
                                                  replica=f"replica-{self.rng.randrange(3)}")
                        producer.send(self.topic, key=model.encode(),
                                      value=json.dumps(record).encode())
                        self.sent += 1
        finally:
            producer.close(timeout=5)
