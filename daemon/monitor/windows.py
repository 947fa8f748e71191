"""Per model and version: bounded sliding windows, the frozen reference, joined labels.

The hot path appends one typed row per event to a bounded deque (no per-event numpy or
pandas); columns are built only when the evaluator asks for a frame, as ``detectors.columns``
names them. What falls out is counted. Callers read through the query API at the end of
``ModelWindows``, never its internals.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

import detectors.columns as col
from daemon.events import ChatMessage, FeedbackEvent, InferenceEvent
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


class WindowRow(NamedTuple):
    """One inference, as the windows keep it: what detectors need and nothing more. A tuple
    underneath (cheap to append, transposed in C by ``zip``), read by name."""

    ts: float
    request_id: str
    latency_ms: float
    status: str
    input_text: str | None  # the prompt: a chat's last user message (InferenceEvent.prompt_text)
    features: dict[str, Any] | None
    prediction: Any
    score: float | None
    output_text: str | None
    offset: int
    ttft_ms: float | None = None
    tokens_out: int | None = None
    finish_reason: str | None = None
    messages: list[ChatMessage] | None = None  # the whole chat, for the snapshot


class Joined(NamedTuple):
    """A request's feedback as the windows keep it: a class label and a corrected reference
    are kept apart (one is compared with a prediction, the other scored against a text)."""

    label: Any
    reference: str | None
    rating: float | None
MAX_VERSIONS = 8


@dataclass(frozen=True, slots=True)
class MonitoringSettings:
    window: WindowConfig
    reference: ReferenceConfig
    labels: LabelJoinConfig


def row_of(event: InferenceEvent, offset: int) -> WindowRow:
    text: Any = None
    features = event.input
    if features is not None:
        text = features.get("text")  # the classifier's case first: one lookup (hot path)
        if type(text) is not str:
            text = event.prompt_text
    output = event.output
    if output is None:
        return WindowRow(event.ts_s, event.request_id, event.latency_ms, event.status, text,
                         features, None, None, None, offset, event.ttft_ms, event.tokens_out,
                         None, event.messages)
    return WindowRow(event.ts_s, event.request_id, event.latency_ms, event.status, text,
                     features, output.label, output.score, output.text, offset, event.ttft_ms,
                     event.tokens_out, output.finish_reason, event.messages)


_serials = itertools.count()


class Rows:
    """A bounded deque of rows with the labels joined to them. The counters let an evaluation
    backend be sent only what changed: rows appended, and labels attached (``labels`` keeps
    them in attach order, so the newest are its last items)."""

    def __init__(self, size: int | None) -> None:
        self.rows: deque[WindowRow] = deque(maxlen=size)
        self.labels: dict[str, Joined] = {}
        self.appended = 0
        self.aged_out = 0
        self.serial = next(_serials)
        self.label_seq = 0

    def append(self, row: WindowRow) -> None:
        self.rows.append(row)
        self.appended += 1

    @property
    def evicted(self) -> int:
        return self.appended - len(self.rows)

    def evict_older_than(self, horizon: float) -> None:
        rows = self.rows
        while rows and rows[0].ts < horizon:
            rows.popleft()
            self.aged_out += 1

    def attach(self, request_id: str, feedback: Joined) -> None:
        """Join feedback to a row; a later part (a reference after a rating) fills in what
        the earlier one left empty. The merged feedback moves to the end (newest last), so a
        delta's newest labels carry it whole."""
        old = self.labels.pop(request_id, None)
        if old is not None:
            feedback = Joined(*(o if o is not None else n
                                for o, n in zip(old, feedback, strict=True)))
        self.labels[request_id] = feedback
        self.label_seq += 1
        # A frozen reference (no maxlen) is offered every label of its version too: without
        # this bound its dict grew by each one, forever.
        if len(self.labels) > 2 * (self.rows.maxlen or len(self.rows)) + 1000:
            self._prune_labels()

    def _prune_labels(self) -> None:
        live = {row.request_id for row in self.rows}
        # Order survives, so the newest labels stay last: a delta's "last k" still holds
        # every new label that matters (one for a row gone from the window may not).
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

    def add_inference(self, event: InferenceEvent, offset: int) -> None:
        version = event.model_version
        window = self.current.get(version)
        if window is None:
            window = self._new_version(version)
        else:
            self.current.move_to_end(version)
        row = row_of(event, offset)
        window.append(row)
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

    def labelled_rows(self) -> list[tuple[WindowRow, Joined]]:
        """Every current row whose feedback has joined, with that feedback."""
        with self.lock:
            return [(row, joined) for rows in self.current.values() for row in rows.rows
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
