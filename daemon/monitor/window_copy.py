"""The evaluation side's copy of a version's window, fed by deltas: the rows and labels the
ingest side holds, rebuilt without ever sending a whole frame per pass."""

from __future__ import annotations

from collections import deque
from typing import Any

from daemon.monitor.deltas import (
    ReferenceRows,
    RowBatch,
    VersionDelta,
    unpack_columns,
    unpack_labels,
)
from daemon.monitor.row_buffer import RowsSnapshot
from daemon.monitor.window_row import Joined, WindowRow


def unpack_rows(batch: RowBatch) -> list[WindowRow]:
    c = unpack_columns(batch)
    n = len(batch)
    if c.features is None:
        flat: list[dict[str, Any] | None] = [None] * n
    elif c.features:
        names = list(c.features)
        flat = [dict(zip(names, values, strict=True))
                for values in zip(*c.features.values(), strict=True)]
    else:
        flat = [{} for _ in range(n)]
    return list(map(WindowRow._make, zip(
        c.ts.tolist(), c.request_id, c.latency_ms.tolist(), c.status, c.input_text, flat,
        c.prediction, _optional(c.score), c.output_text, c.offset.tolist(),
        _optional(c.ttft_ms), c.tokens_out, c.finish_reason, c.messages, strict=True)))


def _optional(values: Any) -> list[float | None]:
    return [None if v != v else v for v in values.tolist()]  # NaN: none


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
        # The ingest side sends a request's feedback whole (its parts already merged).
        labels = [(rid, Joined(*joined)) for rid, joined in unpack_labels(delta.labels)]
        if delta.reset:
            self.labels = dict(labels)
        else:
            self.labels.update(labels)
        if len(self.labels) > 2 * len(rows) + 1000:
            live = {row.request_id for row in rows}
            self.labels = {rid: v for rid, v in self.labels.items() if rid in live}

    def snapshot(self) -> RowsSnapshot:
        # Single-threaded on the evaluation side: no copies needed.
        return RowsSnapshot(list(self.rows), self.labels)


def reference_snapshot(reference: ReferenceRows) -> RowsSnapshot:
    return RowsSnapshot(unpack_rows(reference.rows),
                        {rid: Joined(*joined) for rid, joined in unpack_labels(reference.labels)})
