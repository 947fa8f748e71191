"""A window's rows: a bounded deque of ``WindowRow`` with the feedback joined to them, its
byte count, what changed since a cursor (the evaluation deltas), and a snapshot that builds
the frame detectors read (``detectors.columns``) outside the model's lock."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

import detectors.columns as col
from daemon.monitor.deltas import Cursor
from daemon.monitor.window_row import Joined, WindowRow, joined_bytes, row_bytes

_serials = itertools.count()


class Rows:
    """A bounded deque of rows with the labels joined to them; ``bytes`` is what they hold.
    The counters let an evaluation backend be sent only what changed: rows appended, and
    labels attached (``labels`` keeps them in attach order, so the newest are its last items)."""

    def __init__(self, size: int | None) -> None:
        self.rows: deque[WindowRow] = deque(maxlen=size)
        self.labels: dict[str, Joined] = {}
        self.appended = 0
        self.aged_out = 0
        self.bytes = 0
        self.serial = next(_serials)
        self.label_seq = 0

    def append(self, row: WindowRow) -> None:
        rows = self.rows
        if rows.maxlen is not None and len(rows) == rows.maxlen:
            self.bytes -= row_bytes(rows[0])  # the deque drops it on append
        rows.append(row)
        self.bytes += row_bytes(row)
        self.appended += 1

    def evict_oldest(self) -> None:
        """One row out for the byte budget (counted), and its label with it."""
        row = self.rows.popleft()
        self.bytes -= row_bytes(row)
        joined = self.labels.pop(row.request_id, None)
        if joined is not None:
            self.bytes -= joined_bytes(row.request_id, joined)

    @property
    def evicted(self) -> int:
        return self.appended - len(self.rows)

    def evict_older_than(self, horizon: float) -> None:
        rows = self.rows
        while rows and rows[0].ts < horizon:
            self.bytes -= row_bytes(rows.popleft())
            self.aged_out += 1

    def attach(self, request_id: str, feedback: Joined) -> None:
        """Join feedback to a row; a later part (a reference after a rating) fills in what
        the earlier one left empty. The merged feedback moves to the end (newest last), so a
        delta's newest labels carry it whole."""
        old = self.labels.pop(request_id, None)
        if old is not None:
            self.bytes -= joined_bytes(request_id, old)
            feedback = Joined(*(o if o is not None else n
                                for o, n in zip(old, feedback, strict=True)))
        self.labels[request_id] = feedback
        self.label_seq += 1
        self.bytes += joined_bytes(request_id, feedback)
        # A frozen reference (no maxlen) is offered every label of its version too: without
        # this bound its dict grew by each one, forever.
        if len(self.labels) > 2 * (self.rows.maxlen or len(self.rows)) + 1000:
            self._prune_labels()

    def _prune_labels(self) -> None:
        live = {row.request_id for row in self.rows}
        # Order survives, so the newest labels stay last: a delta's "last k" still holds
        # every new label that matters (one for a row gone from the window may not).
        for rid, joined in self.labels.items():
            if rid not in live:
                self.bytes -= joined_bytes(rid, joined)
        self.labels = {rid: v for rid, v in self.labels.items() if rid in live}

    def snapshot(self) -> RowsSnapshot:
        """Rows and labels as they are now: cheap copies, taken under the model's lock."""
        return RowsSnapshot(list(self.rows), dict(self.labels))

    def frame(self, features: Sequence[str]) -> pd.DataFrame:
        return self.snapshot().frame(features)

    def delta(self, cursor: Cursor) -> tuple[list[WindowRow], bool, list[tuple[str, Joined]]]:
        """Rows and labels added since ``cursor`` (everything when the cursor follows another
        window, or is too far behind), and advances the cursor. O(what changed)."""
        new = self.appended - cursor.appended
        reset = cursor.serial != self.serial or new > len(self.rows) or new < 0
        rows = list(self.rows) if reset else _newest(self.rows, new)
        labels = (list(self.labels.items()) if reset
                  else _newest(self.labels.items(), self.label_seq - cursor.label_seq))
        cursor.serial, cursor.appended, cursor.label_seq = (self.serial, self.appended,
                                                            self.label_seq)
        return rows, reset, labels


def _newest(items: Any, n: int) -> list[Any]:
    """The last ``n`` of a deque or dict view, oldest first, reading only those ``n``."""
    if n <= 0:
        return []
    out = list(itertools.islice(reversed(items), n))
    out.reverse()
    return out


@dataclass(frozen=True, slots=True)
class RowsSnapshot:
    """A window's rows and joined feedback as they were at one instant, for building a frame
    outside the model's lock."""

    rows: list[WindowRow]
    labels: dict[str, Joined]

    def frame(self, features: Sequence[str]) -> pd.DataFrame:
        """Rows as the columns of ``detectors.columns``. zip(*rows) transposes in C: a 10k-row
        window costs milliseconds."""
        transposed: list[tuple[Any, ...]] = (list(zip(*self.rows, strict=True)) if self.rows
                                             else [()] * len(WindowRow._fields))
        c = dict(zip(WindowRow._fields, transposed, strict=True))
        joined = [self.labels.get(rid) for rid in c["request_id"]]
        data: dict[str, Any] = {
            col.TS: np.asarray(c["ts"], dtype=np.float64),
            col.REQUEST_ID: c["request_id"],
            col.LATENCY_MS: np.asarray(c["latency_ms"], dtype=np.float64),
            col.STATUS: c["status"],
            col.INPUT_TEXT: c["input_text"],
            col.PREDICTION: c["prediction"],
            col.SCORE: _floats(c["score"]),
            col.OUTPUT_TEXT: c["output_text"],
            col.TTFT_MS: _floats(c["ttft_ms"]),
            col.TOKENS_OUT: _floats(c["tokens_out"]),
            col.FINISH_REASON: c["finish_reason"],
            col.LABEL: [None if j is None else j.label for j in joined],
            col.REFERENCE: [None if j is None else j.reference for j in joined],
            col.RATING: _floats([None if j is None else j.rating for j in joined]),
        }
        for name in features:
            data[name] = [None if f is None else f.get(name) for f in c["features"]]
        return pd.DataFrame(data)


def _floats(values: Sequence[float | None]) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
