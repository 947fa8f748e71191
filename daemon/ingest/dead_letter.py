"""The dead-letter topic: what ingest sends there (each record's own offset, key and bytes) and
the retry schedule while the topic refuses writes (daemon.ingest.dead_letter_holds pauses the
partition meanwhile and reports it).

A record is never skipped: while its dead letter is not delivered, nothing at or past its
offset is committed, and the partition is paused (not re-read) until the next retry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kafka import KafkaProducer
    from kafka.consumer.fetcher import ConsumerRecord
    from kafka.structs import TopicPartition

log = logging.getLogger(__name__)

# Room kept in a produce request for the headers and the record batch's framing.
_ENVELOPE_BYTES = 16 * 1024
_ERROR_BYTES = 1000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record that is neither applied nor applicable, with why (``reason`` is a label)."""

    record: ConsumerRecord
    reason: str
    detail: str


class DeadLetterSender:
    """Sends dead letters; each keeps its source offset, key, value and headers.

    A key or value too large for a produce request is cut to what fits, with a
    ``lifeguard.truncated`` header giving the original sizes: one hostile message must not
    make the dead-letter topic refuse it forever and so wedge its partition.

    After a failed send the producer is closed and the next send builds a new one: an
    idempotent producer whose batches were aborted can stay in a fatal state for good.
    """

    def __init__(self, factory: Callable[[], KafkaProducer], topic: str,
                 max_request_bytes: int, timeout_s: float = 10.0) -> None:
        self.factory = factory
        self.producer: KafkaProducer | None = None
        self.topic = topic
        self.max_payload = max(1024, max_request_bytes - _ENVELOPE_BYTES)
        self.timeout_s = timeout_s

    def send(self, letters: Sequence[DeadLetter]) -> list[str | None]:
        """Per letter, in order: None when delivered, else the error that stopped it."""
        outcomes = self._send(letters)
        if any(outcome is not None for outcome in outcomes):
            self.close(timeout_s=0.0)
        return outcomes

    def close(self, timeout_s: float = 5.0) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            try:
                producer.close(timeout=timeout_s)
            except Exception:
                log.debug("dead-letter producer close failed", exc_info=True)

    def _send(self, letters: Sequence[DeadLetter]) -> list[str | None]:
        futures: list[Any] = []
        refused = ""
        try:
            if self.producer is None:
                self.producer = self.factory()
            for letter in letters:
                futures.append(self._send_one(self.producer, letter))
            self.producer.flush(timeout=self.timeout_s)
        except Exception as exc:
            # send() itself refused (metadata timeout, buffer full): the rest never went out.
            refused = f"{type(exc).__name__}: {exc}"
        outcomes: list[str | None] = []
        for future in futures:
            try:
                future.get(timeout=self.timeout_s)
            except Exception as exc:
                outcomes.append(f"{type(exc).__name__}: {exc}")
            else:
                outcomes.append(None)
        outcomes.extend([refused] * (len(letters) - len(futures)))
        return outcomes

    def _send_one(self, producer: KafkaProducer, letter: DeadLetter) -> Any:
        r = letter.record
        key, value = r.key, r.value
        headers = [
            ("lifeguard.reason", letter.reason.encode()),
            ("lifeguard.error", letter.detail.encode()[:_ERROR_BYTES]),
            ("lifeguard.source.topic", r.topic.encode()),
            ("lifeguard.source.partition", str(r.partition).encode()),
            ("lifeguard.source.offset", str(r.offset).encode()),
            ("lifeguard.source.timestamp", str(r.timestamp).encode()),
        ]
        size = len(key or b"") + len(value or b"")
        if size > self.max_payload:
            headers.append(("lifeguard.truncated",
                            f"key={len(key or b'')} value={len(value or b'')}".encode()))
            key = None if key is None else key[: min(len(key), 1024)]
            value = None if value is None else value[: self.max_payload - len(key or b"")]
        # The source record's own headers go along: nothing it carried is lost.
        extra = [(k, v) for k, v in (r.headers or []) if not k.startswith("lifeguard.")]
        return producer.send(self.topic, key=key, value=value, headers=headers + extra)


@dataclass
class Blocked:
    """A partition held back because its dead letters cannot be delivered."""

    offset: int  # the first record whose dead letter is not delivered: committed up to here
    attempts: int
    retry_at: float  # monotonic
    error: str
    since: float  # wall clock, for the report


class DeadLetterBackoff:
    """Per-partition retry schedule: doubling delays, and after ``retries`` failures in a row
    the partition counts as paused (reported on /healthz and /metrics) while retries go on at
    the longest delay until the topic takes writes again."""

    def __init__(self, retries: int, backoff_s: float, max_backoff_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.clock = clock
        self.blocked: dict[TopicPartition, Blocked] = {}

    def failed(self, tp: TopicPartition, offset: int, error: str) -> Blocked:
        previous = self.blocked.get(tp)
        attempts = 1 if previous is None else previous.attempts + 1
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempts - 1))
        since = time.time() if previous is None else previous.since
        entry = self.blocked[tp] = Blocked(offset, attempts, self.clock() + delay, error, since)
        if attempts == self.retries:
            log.error("dead-letter topic refuses writes (%s): partition %s:%d paused at offset "
                      "%d, retrying every %.0fs", error, tp.topic, tp.partition, offset,
                      self.max_backoff_s)
        return entry

    def succeeded(self, tp: TopicPartition) -> bool:
        """True when the partition was held back and is free again."""
        entry = self.blocked.pop(tp, None)
        if entry is not None and entry.attempts >= self.retries:
            log.warning("dead-letter topic takes writes again: partition %s:%d resumes",
                        tp.topic, tp.partition)
        return entry is not None

    def due(self) -> list[TopicPartition]:
        now = self.clock()
        return [tp for tp, entry in self.blocked.items() if entry.retry_at <= now]

    def forget(self, tp: TopicPartition) -> None:
        self.blocked.pop(tp, None)

    def paused(self) -> dict[TopicPartition, Blocked]:
        """Partitions past their retries: what health and the gauge report."""
        return {tp: b for tp, b in self.blocked.items() if b.attempts >= self.retries}
