"""What ingest hands to the rest of the daemon: validated events, one partition at a time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from daemon.events import Event
from lifeguard.errors import LifeguardError

TopicPartitionId = tuple[str, int]


@dataclass(frozen=True, slots=True)
class PartitionBatch:
    """Valid events from one partition, in offset order.

    ``replay`` is True when these events were read again to rebuild in-memory state after a
    restart or a rebalance (they were applied before): rebuild windows from them, but count
    nothing twice and act on nothing.
    """

    topic: str
    partition: int
    events: Sequence[Event]
    first_offset: int  # offset of the first message in the batch (valid or not)
    last_offset: int  # offset of the last message in the batch (valid or not)
    replay: bool = False


class RejectedEvents(LifeguardError):
    """Raised by a sink that applied every event of a batch except these (index in
    ``batch.events`` -> why): ingest dead-letters them and must not apply the batch again."""

    def __init__(self, failures: dict[int, str]) -> None:
        super().__init__(f"{len(failures)} event(s) rejected")
        self.failures = failures


class EventSink(Protocol):
    """Something ingest applies batches to. ``apply`` must be quick: it runs on the consumer
    thread, between two polls."""

    def apply(self, batch: PartitionBatch) -> None: ...

    def release(self, partitions: Sequence[TopicPartitionId]) -> None:
        """These partitions moved to another instance: drop their state, stop acting for them."""
        ...


def apply_each(sink: EventSink, batch: PartitionBatch) -> dict[int, str]:
    """Apply ``batch``'s events one at a time (after the whole batch failed), so one poison
    event costs only itself: the index and error of each the sink refused."""
    failures = {}
    for i, event in enumerate(batch.events):
        single = PartitionBatch(batch.topic, batch.partition, [event], batch.first_offset,
                                batch.last_offset, batch.replay)
        try:
            sink.apply(single)
        except Exception as exc:
            failures[i] = f"{type(exc).__name__}: {exc}"
    return failures
