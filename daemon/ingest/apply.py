"""Applying one partition's batch to the sink so that a poison event neither wedges the
partition nor vanishes: what the sink refuses comes back as a dead letter of the record the
event came from (its own offset and bytes)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from daemon.ingest.batch import EventSink, PartitionBatch, RejectedEvents
from daemon.ingest.dead_letter import DeadLetter

if TYPE_CHECKING:
    from kafka.consumer.fetcher import ConsumerRecord

log = logging.getLogger(__name__)


def apply_batch(sink: EventSink, batch: PartitionBatch, records: Sequence[ConsumerRecord],
                dead: list[DeadLetter]) -> None:
    """Apply ``batch``; append to ``dead`` what was refused (``records[i]`` is the record of
    ``batch.events[i]``). A replay batch was dead-lettered before: nothing is added for it."""
    try:
        sink.apply(batch)
    except RejectedEvents as exc:
        # Applied but for these: dead-letter them as the records they came from.
        if not batch.replay:
            dead.extend(DeadLetter(records[i], "apply_error", reason)
                        for i, reason in sorted(exc.failures.items()))
    except Exception:
        log.exception("applying a batch failed; retrying its events one by one")
        _apply_one_by_one(sink, batch, records, dead)


def _apply_one_by_one(sink: EventSink, batch: PartitionBatch,
                      records: Sequence[ConsumerRecord], dead: list[DeadLetter]) -> None:
    for i, event in enumerate(batch.events):
        single = PartitionBatch(batch.topic, batch.partition, [event], batch.first_offset,
                                batch.last_offset, batch.replay)
        try:
            sink.apply(single)
        except Exception as exc:
            if batch.replay:
                continue
            dead.append(DeadLetter(records[i], "apply_error", f"{type(exc).__name__}: {exc}"))
