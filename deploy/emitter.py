"""The fleet's event log: one InferenceEvent (or FeedbackEvent) per request to Kafka (key = model
name), sent from a background thread so that a slow or absent broker never delays a request."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any

from daemon.events import Event, FeedbackEvent, InferenceEvent, encode

log = logging.getLogger(__name__)
_STOP = object()
_BOOTSTRAP_MS = 5000  # one connect attempt; kafka-python's default blocks 30 s
_RECONNECT_S = 5.0  # after a failed connect, events are dropped (and counted) this long
# An unacknowledged event fails after this long, so that flushing at close ends even when the
# broker went away first (kafka-python's default is two minutes).
_CLOSE_FLUSH_S = 6.0


@dataclass
class EmitterStats:
    """Counts for the replica's own health: what was sampled out, sent, dropped, failed."""

    sampled_out: int = 0
    queued: int = 0
    sent: int = 0
    dropped: int = 0  # queue full: the broker is slower than the traffic
    failed: int = 0  # the producer reported an error for a sent event


def sampled(request_id: str, rate: float) -> bool:
    """Deterministic per request id, so feedback for a logged request joins its inference."""
    if rate >= 1.0:
        return True
    return zlib.crc32(request_id.encode()) / 0xFFFFFFFF < rate


class EventEmitter:
    """Bounded queue in front of a KafkaProducer; ``emit`` never blocks."""

    def __init__(self, bootstrap: str | None, topic: str = "inference", sample_rate: float = 1.0,
                 queue_size: int = 10_000, delivery_timeout_s: float = 5.0) -> None:
        if delivery_timeout_s < 1.0:
            raise ValueError("delivery_timeout_s must be >= 1")
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in [0, 1], got {sample_rate}")
        if queue_size < 1:
            raise ValueError("queue_size must be positive")
        if not topic:
            raise ValueError("topic must be a non-empty name")
        self.bootstrap = bootstrap
        self.topic = topic
        self.sample_rate = sample_rate
        self.delivery_timeout_s = delivery_timeout_s
        self.stats = EmitterStats()
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        if bootstrap:
            self._thread = threading.Thread(target=self._pump, name="event-emitter", daemon=True)
            self._thread.start()

    def emit(self, event: Event) -> None:
        if self._thread is None:
            return
        if not sampled(event.request_id, self.sample_rate):
            self.stats.sampled_out += 1
            return
        try:
            self._queue.put_nowait(event)
            self.stats.queued += 1
        except queue.Full:
            self.stats.dropped += 1

    @property
    def pending(self) -> int:
        """Events waiting in the queue for the background thread."""
        return self._queue.qsize()

    def close(self, timeout_s: float = _CLOSE_FLUSH_S + 2.0) -> None:
        """Send what is queued (up to ``timeout_s``, past the producer's own flush bound), then
        stop the thread."""
        if self._thread is None:
            return
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout_s)
        self._closing.set()  # a thread still waiting for a broker gives up now
        self._thread.join(timeout_s)
        self._thread = None

    def _pump(self) -> None:
        producer = self._connect()
        retry_at = 0.0 if producer is not None else time.monotonic() + _RECONNECT_S
        while True:
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                if self._closing.is_set():
                    break
                continue
            if item is _STOP:
                break
            if producer is None:
                # No broker: drop (and count) until the next attempt, never retry per event.
                if time.monotonic() < retry_at or self._closing.is_set():
                    self.stats.dropped += 1
                    continue
                producer = self._connect()
                if producer is None:
                    retry_at = time.monotonic() + _RECONNECT_S
                    self.stats.dropped += 1
                    continue
            assert isinstance(item, InferenceEvent | FeedbackEvent)
            try:
                future = producer.send(self.topic, key=item.model.encode(), value=encode(item))
                future.add_callback(self._on_sent).add_errback(self._on_error)
            except Exception as exc:  # buffer full, broker gone: count it and keep serving
                self._on_error(exc)
        if producer is not None:
            self._close_producer(producer)

    def _close_producer(self, producer: Any) -> None:
        """Flush for a bounded time. Records the broker never acknowledged have failed by then
        (the delivery timeout), counted as failed; a flush that still times out counts what
        was left as dropped. Closing also drops kafka-python's atexit hook, which blocks on a
        dead broker at exit."""
        from kafka.errors import KafkaTimeoutError

        try:
            producer.flush(_CLOSE_FLUSH_S)
            producer.close(1)
        except KafkaTimeoutError:
            s = self.stats
            unsent = max(0, s.queued - s.sent - s.failed - s.dropped)
            s.dropped += unsent
            log.warning("event emitter: %d events not flushed in %.0fs, dropped", unsent,
                        _CLOSE_FLUSH_S)
            with contextlib.suppress(KafkaTimeoutError):
                producer.close(0)

    def _connect(self) -> Any:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        deadline = time.monotonic() + 2 * _BOOTSTRAP_MS / 1000
        delivery_ms = int(self.delivery_timeout_s * 1000)
        while not self._closing.is_set():
            try:
                return KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, acks=1,
                                     max_block_ms=2000, retries=3,
                                     bootstrap_timeout_ms=_BOOTSTRAP_MS,
                                     # An event the broker never took is counted failed
                                     # after this long, not held in memory for good.
                                     delivery_timeout_ms=delivery_ms,
                                     request_timeout_ms=min(3000, delivery_ms - 100))
            except KafkaError as exc:
                if time.monotonic() >= deadline:
                    log.warning("event emitter: cannot reach %s: %r", self.bootstrap, exc)
                    return None
                self._closing.wait(0.5)
        return None

    def _on_sent(self, _metadata: object) -> None:
        self.stats.sent += 1

    def _on_error(self, exc: BaseException) -> None:
        self.stats.failed += 1
        log.warning("event emitter: send failed: %r", exc)
