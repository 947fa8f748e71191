"""The evaluation side's copy of a version's window, fed by deltas: the rows and labels the
ingest side holds, rebuilt without ever sending a whole frame per pass."""

from __future__ import annotations

from collections import deque
from typing import Any

from daemon.monitor.deltas import ReferenceRows, RowBatch, VersionDelta
from daemon.monitor.windows import Joined, RowsSnapshot, WindowRow


def unpack_rows(batch: RowBatch) -> list[WindowRow]:
    n = len(batch)
    if batch.features is None:
        flat: list[dict[str, Any] | None] = [None] * n
    else:
        names = list(batch.features)
        flat = [dict(zip(names, values, strict=True))
                for values in zip(*batch.features.values(), strict=True)] if names \
            else [{} for _ in range(n)]
    return list(map(WindowRow._make, zip(
        batch.ts.tolist(), batch.request_id, batch.latency_ms.tolist(), batch.status,
        batch.input_text, flat, batch.prediction, batch.score.tolist(), batch.output_text,
        batch.offset.tolist(), strict=True)))


class WindowCopy:
    """The evaluation side's copy of one version's current window, fed by deltas."""

    def __init__(self) -> None:
        self.rows: deque[WindowRow] = deque()
        self.labels: dict[str, Joined] = {}

    def apply(self, delta: VersionDelta) -> None:
        rows = self.rows
        if delta.reset:
            rows.clear()
        rows.extend(unpack_rows(delta.rows))
        while len(rows) > delta.length:
            rows.popleft()
        if delta.labels_reset:
            self.labels = dict(delta.labels)
        else:
            self.labels.update(delta.labels)
        if len(self.labels) > 2 * len(rows) + 1000:
            live = {row.request_id for row in rows}
            self.labels = {rid: v for rid, v in self.labels.items() if rid in live}

    def snapshot(self) -> RowsSnapshot:
        # Single-threaded on the evaluation side: no copies needed.
        return RowsSnapshot(list(self.rows), self.labels)


def reference_snapshot(reference: ReferenceRows) -> RowsSnapshot:
    return RowsSnapshot(unpack_rows(reference.rows), dict(reference.labels))
