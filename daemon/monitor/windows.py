"""Per model and version: bounded sliding windows, the frozen reference, joined labels.

The hot path appends one typed row per event to a bounded deque (no per-event numpy or
pandas); columns are built only when the evaluator asks for a frame, as ``detectors.columns``
names them. What falls out is counted. A model's current windows hold at most
``window.max_bytes`` (estimated from text lengths), evicting the oldest rows of its largest
window past it. Callers read through the query API at the end of ``ModelWindows``.
A window's rows are a ``row_buffer.Rows``; one row is a ``window_row.WindowRow``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

import detectors.columns as col
from daemon.events import FeedbackEvent, InferenceEvent
from daemon.ingest.batch import TopicPartitionId
from daemon.monitor.config import LabelJoinConfig, ReferenceConfig, WindowConfig
from daemon.monitor.deltas import (
    Cursor,
    PassDelta,
    ReferenceRows,
    VersionDelta,
    pack_labels,
    pack_rows,
)
from daemon.monitor.labels import LabelJoin
from daemon.monitor.row_buffer import Rows, RowsSnapshot
from daemon.monitor.window_row import Joined, WindowRow, row_of

MAX_VERSIONS = 8


@dataclass(frozen=True, slots=True)
class MonitoringSettings:
    window: WindowConfig
    reference: ReferenceConfig
    labels: LabelJoinConfig


class ModelWindows:
    """One model's state: a current window and a reference per version, and the label join.

    The lock makes a frame a consistent snapshot while the ingest thread keeps appending.
    """

    def __init__(self, name: str, settings: MonitoringSettings, partition: TopicPartitionId,
                 file_reference: pd.DataFrame | None = None) -> None:
        self.name = name
        self.settings = settings
        self.partition = partition
        self.lock = threading.Lock()
        self.current: OrderedDict[str, Rows] = OrderedDict()
        self.references: dict[str, Rows] = {}
        self.file_reference = file_reference
        self.join = LabelJoin(settings.labels)
        self.new_events = 0
        self.last_offset = -1
        self.replaying = False  # the newest batch re-read history: evaluate nothing yet
        self.dropped_versions = 0
        self.over_budget = 0  # rows evicted for window.max_bytes, every version together

    def add_inference(self, event: InferenceEvent, offset: int) -> None:
        version = event.model_version
        window = self.current.get(version)
        if window is None:
            window = self._new_version(version)
        else:
            self.current.move_to_end(version)
        row = row_of(event, offset)
        window.append(row)
        self._within_budget()
        reference = self.references.get(version)
        if reference is not None and len(reference.rows) < self.settings.reference.first_n:
            reference.append(row)
        self.new_events += 1
        self.last_offset = offset
        early = self.join.on_inference(event.request_id, version, row.ts)
        if early is not None:
            self._attach(version, early)

    def add_feedback(self, event: FeedbackEvent) -> None:
        pending = self.join.on_feedback(event)
        if pending is not None:
            self._attach(pending.version, event)

    def _attach(self, version: str, feedback: FeedbackEvent) -> None:
        joined = Joined(feedback.label, feedback.reference, feedback.rating_value)
        for rows in (self.current.get(version), self.references.get(version)):
            if rows is not None:
                rows.attach(feedback.request_id, joined)
        self._within_budget()

    @property
    def bytes(self) -> int:
        """What the current windows hold (references are bounded by ``first_n`` rows)."""
        return sum(rows.bytes for rows in self.current.values())

    def _within_budget(self) -> None:
        """Evict the oldest rows of the largest window until the model is within its byte
        budget: a producer of huge texts shrinks its own version's window first."""
        budget = self.settings.window.max_bytes
        while self.bytes > budget:
            largest = max(self.current.values(), key=lambda rows: rows.bytes)
            if not largest.rows:
                break  # only labels left: pruned with their rows
            largest.evict_oldest()
            self.over_budget += 1

    def _new_version(self, version: str) -> Rows:
        if len(self.current) >= MAX_VERSIONS:
            old, _ = self.current.popitem(last=False)
            self.references.pop(old, None)
            self.dropped_versions += 1
        window = self.current[version] = Rows(self.settings.window.size)
        if self.file_reference is None:
            # Unbounded deque, but appends stop at first_n: the reference freezes there.
            self.references[version] = Rows(None)
        return window

    def age_out(self) -> None:
        max_age = self.settings.window.max_age
        if not max_age:
            return
        newest = max((w.rows[-1].ts for w in self.current.values() if w.rows), default=None)
        if newest is not None:
            for window in self.current.values():
                window.evict_older_than(newest - max_age)

    # -- the query API (callers hold no internals) -------------------------------------------

    def take_new_events(self) -> int:
        """Events since the last call (the evaluator's every-N-events trigger)."""
        with self.lock:
            new, self.new_events = self.new_events, 0
        return new

    def pass_delta(self, min_events: int, cursors: dict[str, Cursor]) -> PassDelta | None:
        """What a backend needs for a pass over the versions with at least ``min_events``
        current rows and a frozen reference: per version, what changed since its cursor in
        ``cursors`` (advanced here; cursors of versions that left the windows are dropped).
        Ages rows out first. None while the windows are rebuilt from replayed history:
        judge nothing yet."""
        features = self.settings.window.features
        with self.lock:
            self.age_out()
            self.new_events = 0
            if self.replaying:
                return None
            for gone in [v for v in cursors if v not in self.current]:
                del cursors[gone]
            versions = []
            for version, rows in self.current.items():
                if len(rows.rows) < min_events:
                    continue
                cursor = cursors.get(version) or Cursor()
                # A new window (or a new backend) gets the reference again; otherwise the
                # backend prepared this one already.
                fresh = cursor.serial != rows.serial
                reference: ReferenceRows | pd.DataFrame | None = None
                if self.file_reference is not None:
                    size = len(self.file_reference)
                    if fresh or cursor.reference_size != size:
                        reference = self.file_reference
                else:
                    ref_rows = self.references.get(version)
                    if ref_rows is None or len(ref_rows.rows) < self.settings.reference.first_n:
                        continue
                    size = len(ref_rows.rows)
                    if fresh or cursor.reference_size != size:
                        reference = ReferenceRows(pack_rows(ref_rows.rows, features),
                                                  pack_labels(list(ref_rows.labels.items())))
                cursors[version] = cursor
                new, reset, labels = rows.delta(cursor)
                cursor.reference_size = size
                versions.append(VersionDelta(version, pack_rows(new, features), reset,
                                             len(rows.rows), pack_labels(labels), reference,
                                             size))
            return PassDelta(self.name, versions, self.last_offset, set(self.current))

    def versions(self) -> set[str]:
        with self.lock:
            return set(self.current)

    def rows_since(self, version: str, since_s: float) -> RowsSnapshot:
        """A version's current rows with event time >= ``since_s``, and their feedback."""
        with self.lock:
            rows = self.current.get(version)
            if rows is None:
                return RowsSnapshot([], {})
            return RowsSnapshot([r for r in rows.rows if r.ts >= since_s], dict(rows.labels))

    def labelled_rows(self, versions: Collection[str] | None = None,
                      ) -> list[tuple[WindowRow, Joined]]:
        """Every current row whose feedback has joined, with that feedback; only rows of
        ``versions`` when given."""
        with self.lock:
            return [(row, joined) for version, rows in self.current.items()
                    if versions is None or version in versions for row in rows.rows
                    if (joined := rows.labels.get(row.request_id)) is not None]

    def reference_frame(self, version: str) -> pd.DataFrame | None:
        """The frozen reference for ``version``; None until it has ``first_n`` events."""
        if self.file_reference is not None:
            return self.file_reference
        rows = self.references.get(version)
        if rows is None or len(rows.rows) < self.settings.reference.first_n:
            return None
        return rows.frame(self.settings.window.features)

    def current_frame(self, version: str) -> pd.DataFrame | None:
        rows = self.current.get(version)
        return None if rows is None else rows.frame(self.settings.window.features)


def load_reference(path: Path) -> pd.DataFrame:
    """A reference file: JSONL or Parquet rows with the window's columns."""
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_json(path, lines=True)
    if frame.empty:
        raise ValueError(f"reference file {path} has no rows")
    for column in (*col.EVENT_COLUMNS, *col.FEEDBACK_COLUMNS):
        if column not in frame:
            frame[column] = None
    return frame
