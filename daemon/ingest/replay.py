"""Replay on assignment: a partition this instance is newly given is read again from
``replay_messages`` before its committed offset, to rebuild the in-memory windows a restart or
a rebalance left empty. Events below the committed offset are handed on as ``replay`` batches:
they rebuild state but are counted, dead-lettered and acted on by nobody a second time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from daemon.ingest.metrics import IngestMetrics

if TYPE_CHECKING:
    from kafka import KafkaConsumer
    from kafka.consumer.fetcher import ConsumerRecord
    from kafka.structs import TopicPartition

log = logging.getLogger(__name__)


class Replay:
    """Which partitions still need seeking back, and where each one's replay ends."""

    def __init__(self, depth: int | None, metrics: IngestMetrics) -> None:
        self.depth = depth
        self.metrics = metrics
        self._needs_replay: set[TopicPartition] = set()
        # Partition -> offset below which messages are replays of committed history.
        self._replay_until: dict[TopicPartition, int] = {}

    def request(self, assigned: Iterable[TopicPartition]) -> None:
        """Called on assignment. Seeking back needs the committed offset, a blocking call
        kafka-python refuses inside a rebalance callback: ``seek_back`` does it after poll()."""
        if self.depth:
            self._needs_replay.update(assigned)

    @property
    def requested(self) -> bool:
        return bool(self._needs_replay)

    def seek_back(self, consumer: KafkaConsumer,
                  records: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Seek newly assigned partitions back ``depth`` before their committed offset.
        Records this poll already fetched for them are set aside (not applied, not
        committed): the seek fetches them again, after the replayed history."""
        depth = self.depth or 0
        retry: set[TopicPartition] = set()
        for tp in list(self._needs_replay):
            fetched = records.pop(tp, None)
            if tp not in consumer.assignment():
                continue
            try:
                committed = consumer.committed(tp)
            except Exception as exc:
                # Not fatal: read on from where the poll was (or the group's position), and
                # try the replay again after the next poll.
                self.metrics.consumer_errors.labels("committed_" + type(exc).__name__).inc()
                log.warning("committed offset of %s:%d unavailable (%s); replay retried",
                            tp.topic, tp.partition, exc)
                if fetched:
                    consumer.seek(tp, fetched[0].offset)
                retry.add(tp)
                continue
            if committed:
                # By offset, not by time: offsets_for_times is not reliable on every broker.
                consumer.seek(tp, max(0, committed - depth))
                self._replay_until[tp] = committed
            elif fetched:
                consumer.seek(tp, fetched[0].offset)
        self._needs_replay = retry

    def boundary(self, tp: TopicPartition) -> int:
        """The offset below which ``tp``'s records are replays (-1: none are)."""
        return self._replay_until.get(tp, -1)

    def read_through(self, tp: TopicPartition, last: int) -> None:
        """``tp`` has been read up to ``last``: its replay ends once that passes the boundary."""
        if last + 1 >= self.boundary(tp):
            self._replay_until.pop(tp, None)

    def forget(self, tp: TopicPartition) -> None:
        self._needs_replay.discard(tp)
        self._replay_until.pop(tp, None)
