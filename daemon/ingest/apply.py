"""Applying one partition's batch to the sink so that a poison event neither wedges the
partition nor vanishes: what the sink refuses comes back as a dead letter of the record the
event came from (its own offset and bytes)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from daemon.ingest.batch import EventSink, PartitionBatch, RejectedEvents, apply_each
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
        return
    except RejectedEvents as exc:
        failures = exc.failures  # applied but for these
    except Exception:
        log.exception("applying a batch failed; retrying its events one by one")
        failures = apply_each(sink, batch)
    if not batch.replay:  # dead-lettered as the records they came from
        dead.extend(DeadLetter(records[i], "apply_error", reason)
                    for i, reason in sorted(failures.items()))
