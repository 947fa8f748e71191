"""Offset bookkeeping for the consumer: how far each partition has been read, and which
offsets are owed a commit.

Offsets are committed only after their events were applied (at-least-once); a commit that
fails stays owed and is retried on the next loop, so a broker hiccup costs a re-read at most.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from daemon.ingest.metrics import IngestMetrics

if TYPE_CHECKING:
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

log = logging.getLogger(__name__)


class OffsetTracker:
    """Per partition: the next offset to read, and the offset owed a commit."""

    def __init__(self, metrics: IngestMetrics) -> None:
        self.metrics = metrics
        # Offsets applied but not yet committed (commit failed): retried every loop.
        self._pending: dict[TopicPartition, int] = {}
        self._next_offset: dict[TopicPartition, int] = {}

    def read_through(self, tp: TopicPartition, last: int) -> None:
        """Every record of ``tp`` up to ``last`` has been handled (applied or set aside)."""
        self._next_offset[tp] = last + 1

    def commit_read(self, tp: TopicPartition) -> None:
        """Owe a commit of everything read from ``tp``."""
        self._pending[tp] = self._next_offset[tp]

    def commit_before(self, tp: TopicPartition, offset: int) -> None:
        """Owe a commit of ``tp`` up to, not including, ``offset`` (a record still owed)."""
        self._pending[tp] = offset

    def commit(self, consumer: KafkaConsumer | None) -> None:
        """Commit what is owed; on failure it stays owed for the next call."""
        if not self._pending or consumer is None:
            return
        from kafka.structs import OffsetAndMetadata

        offsets = {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in self._pending.items()}
        try:
            consumer.commit(offsets)
        except Exception as exc:
            self.metrics.commits.labels("failed").inc()
            log.warning("offset commit failed (%s); will retry", exc)
            return
        self.metrics.commits.labels("ok").inc()
        self._pending.clear()

    def forget(self, tp: TopicPartition) -> None:
        """``tp`` moved to another instance: it re-reads from the committed offset."""
        self._pending.pop(tp, None)
        self._next_offset.pop(tp, None)

    def update_lag(self, consumer: KafkaConsumer | None) -> None:
        if consumer is None:
            return
        # From the high watermark the fetches carry: end_offsets is not reliable on every broker.
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            position = self._next_offset.get(tp)
            if highwater is not None and position is not None:
                lag = max(0, highwater - position)
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(lag)
