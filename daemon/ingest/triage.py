"""Triage of one partition's fetched records: each becomes a valid event (decoded, its fields
capped, its model and version admitted, its time clamped) or a dead letter saying why not.

Records below the partition's replay boundary were applied before: their events go to a
replay batch, and a refused one is not dead-lettered a second time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec

from daemon.events import Event, EventError, decode
from daemon.ingest.admission import Admission
from daemon.ingest.batch import TopicPartitionId
from daemon.ingest.dead_letter import DeadLetter
from daemon.ingest.limits import FieldLimits
from daemon.ingest.metrics import IngestMetrics

if TYPE_CHECKING:
    from kafka.consumer.fetcher import ConsumerRecord


@dataclass(slots=True)
class TriagedRecords:
    """One partition's records, sorted; ``fresh_records[i]`` is the record of ``fresh[i]``."""

    replayed: list[Event] = field(default_factory=list)
    fresh: list[Event] = field(default_factory=list)
    fresh_records: list[ConsumerRecord] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)


class RecordTriage:
    def __init__(self, max_message_bytes: int, max_event_skew: float | None,
                 admission: Admission, limits: FieldLimits, metrics: IngestMetrics) -> None:
        self.max_message_bytes = max_message_bytes
        self.max_event_skew = max_event_skew
        self.admission = admission
        self.limits = limits
        self.metrics = metrics

    def sort(self, partition: TopicPartitionId, messages: Sequence[ConsumerRecord],
             replay_until: int, now: float, wall: float) -> TriagedRecords:
        """``now`` (monotonic) and ``wall`` are the poll's: one clock reading per poll."""
        limit = self.max_message_bytes
        admit = self.admission.check
        capped = self.limits.apply
        skew = self.max_event_skew
        out = TriagedRecords()
        for record in messages:
            try:
                event = decode(record.value, limit)
            except EventError as exc:
                if record.offset >= replay_until:
                    out.dead.append(DeadLetter(record, exc.reason, exc.detail))
                continue
            event = capped(event)
            refused = admit(event, partition, now)
            if refused is not None:
                if record.offset >= replay_until:
                    out.dead.append(DeadLetter(record, *refused))
                continue
            if skew is not None:
                event = self.clamp(event, record.timestamp, wall, skew)
            if record.offset < replay_until:
                out.replayed.append(event)
            else:
                out.fresh.append(event)
                out.fresh_records.append(record)
        return out

    def clamp(self, event: Event, record_ms: int, wall: float, skew: float) -> Event:
        """Event time is the producer's word: hold it within ``skew`` of the broker's record
        time, and ahead of it never past the daemon's own clock plus ``skew``. A far-future
        time would otherwise evict windows, expire every pending label and hide silence."""
        ts = event.ts_s
        record = record_ms / 1000.0 if record_ms >= 0 else wall
        high = min(record, wall) + skew
        if ts > high:
            self.metrics.clamped.labels("future").inc()
            return msgspec.structs.replace(event, ts=high * 1000.0)
        if ts < record - skew:
            self.metrics.clamped.labels("past").inc()
            return msgspec.structs.replace(event, ts=(record - skew) * 1000.0)
        return event
