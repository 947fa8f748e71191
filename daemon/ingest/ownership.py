"""Which partitions this instance owns, and so which models it acts for: the rebalance listener
that reports each change of assignment, the partition counts it learns at each rebalance, and
the key -> partition map the producers' default partitioner uses."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from daemon.ingest.batch import TopicPartitionId

if TYPE_CHECKING:
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

log = logging.getLogger(__name__)


class RebalanceHandler(Protocol):
    def on_revoked(self, revoked: Sequence[TopicPartition]) -> None: ...

    def on_assigned(self, assigned: Sequence[TopicPartition]) -> None: ...


def rebalance_listener(handler: RebalanceHandler) -> Any:
    """A kafka-python listener forwarding its callbacks (they run inside poll()) to ``handler``."""
    from kafka import ConsumerRebalanceListener

    class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
        def on_partitions_revoked(self, revoked: Any) -> None:
            handler.on_revoked(list(revoked))

        def on_partitions_assigned(self, assigned: Any) -> None:
            handler.on_assigned(list(assigned))

    return Rebalance()


def read_partition_counts(consumer: KafkaConsumer, topics: Iterable[str]) -> dict[str, int]:
    """Topic -> number of partitions, from the metadata the group join just fetched; a topic
    whose metadata is missing (a hiccup) is left out so the caller keeps what it knew."""
    counts = {}
    for topic in topics:
        try:
            counts[topic] = len(consumer.partitions_for_topic(topic))
        except Exception:
            log.warning("no partition count for %s", topic, exc_info=True)
    return {t: n for t, n in counts.items() if n > 0}


def key_in_assignment(key: str, assignment: frozenset[TopicPartitionId],
             partition_counts: Mapping[str, int]) -> bool:
    """Whether ``assignment`` holds the partition a message keyed ``key`` goes to, on any of
    the topics in ``partition_counts``."""
    return any((topic, partition_of(key, n)) in assignment
               for topic, n in partition_counts.items())


def partition_of(key: str, n_partitions: int) -> int:
    """The partition kafka-python's (and Java's) default partitioner picks for ``key``."""
    from kafka.partitioner.default import murmur2

    return (murmur2(key.encode()) & 0x7FFFFFFF) % n_partitions
