"""Partitions held back by dead letters the dead-letter topic would not take.

A partition whose dead letters are not all delivered is paused and committed only up to the
first letter still owed; its letters are retried on the backoff's schedule (daemon.ingest.
dead_letter) and, once delivered, the partition is committed through and resumed. Nothing is
dropped, nothing applied twice.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from daemon.ingest.batch import TopicPartitionId
from daemon.ingest.dead_letter import Blocked, DeadLetter, DeadLetterBackoff, DeadLetterSender
from daemon.ingest.metrics import IngestMetrics
from daemon.ingest.offsets import OffsetTracker

if TYPE_CHECKING:
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

log = logging.getLogger(__name__)


class DeadLetterHolds:
    """Delivers each poll's dead letters and holds back the partitions whose letters are owed."""

    def __init__(self, sender: DeadLetterSender, backoff: DeadLetterBackoff,
                 offsets: OffsetTracker, metrics: IngestMetrics) -> None:
        self.sender = sender
        self.backoff = backoff
        self.offsets = offsets
        self.metrics = metrics
        # Dead letters not delivered yet, per (paused) partition, in offset order.
        self._owed: dict[TopicPartition, list[DeadLetter]] = {}
        self._last_error = ""

    def holds(self, tp: TopicPartition) -> bool:
        """Whether ``tp`` waits for its dead letters (records fetched for it are read again)."""
        return tp in self._owed

    def settle(self, consumer: KafkaConsumer | None, tp: TopicPartition,
               letters: list[DeadLetter]) -> None:
        """Deliver a partition's dead letters; commit up to the first one not delivered."""
        owed = self._deliver(letters)
        if not owed:
            self.offsets.commit_read(tp)
            return
        first = owed[0].record.offset
        self._owed[tp] = owed
        self.offsets.commit_before(tp, first)
        self._hold(consumer, tp, first, owed)

    def retry_due(self, consumer: KafkaConsumer | None) -> None:
        """Send again the letters of every partition whose backoff has run out."""
        for tp in self.backoff.due():
            self._retry(consumer, tp)

    def forget(self, tp: TopicPartition) -> None:
        # The new owner re-reads from the committed offset: the first record still owed.
        self._owed.pop(tp, None)
        self.backoff.forget(tp)

    def paused(self) -> dict[TopicPartitionId, Blocked]:
        """Partitions past their retries, as health and the gauge report them."""
        return {(tp.topic, tp.partition): b for tp, b in self.backoff.paused().items()}

    def report(self) -> None:
        self.metrics.paused_partitions.set(len(self.backoff.paused()))

    def close(self) -> None:
        self.sender.close()

    def _deliver(self, letters: list[DeadLetter]) -> list[DeadLetter]:
        """Send; count what was delivered; return what was not, in offset order."""
        if not letters:
            return []
        owed: list[DeadLetter] = []
        for letter, error in zip(letters, self.sender.send(letters), strict=True):
            if error is None:
                self.metrics.dead_lettered.labels(letter.reason).inc()
            else:
                owed.append(letter)
                self._last_error = error
        return owed

    def _hold(self, consumer: KafkaConsumer | None, tp: TopicPartition, first: int,
              owed: list[DeadLetter]) -> None:
        error = self._last_error
        self.metrics.consumer_errors.labels("dead_letter_send").inc()
        entry = self.backoff.failed(tp, first, error)
        log.warning("dead-letter send failed for %d record(s) of %s:%d from offset %d (%s); "
                    "partition paused, retry %d in %.1fs", len(owed), tp.topic, tp.partition,
                    first, error, entry.attempts, entry.retry_at - time.monotonic())
        if consumer is not None and tp in consumer.assignment():
            consumer.pause(tp)
        self.report()

    def _retry(self, consumer: KafkaConsumer | None, tp: TopicPartition) -> None:
        owed = self._owed.get(tp)
        if owed is None:
            self.backoff.forget(tp)
            self.report()
            return
        still = self._deliver(owed)
        if still:
            self._owed[tp] = still
            self.offsets.commit_before(tp, still[0].record.offset)
            self._hold(consumer, tp, still[0].record.offset, still)
            return
        del self._owed[tp]
        self.backoff.succeeded(tp)
        self.offsets.commit_read(tp)
        if consumer is not None and tp in consumer.assignment():
            consumer.resume(tp)
        self.offsets.commit(consumer)
        self.report()
