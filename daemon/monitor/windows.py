"""Per model and version: bounded sliding windows, the frozen reference, joined labels.

The hot path appends one tuple per event to a bounded deque (no per-event numpy or pandas);
columns are built only when the evaluator asks for a frame. What falls out is counted.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from daemon.events import FeedbackEvent, InferenceEvent
from daemon.ingest.batch import TopicPartitionId
from daemon.monitor.config import LabelJoinConfig, ReferenceConfig, WindowConfig
from daemon.monitor.labels import LabelJoin

# One row per inference: what detectors need and nothing more.
TS: Final = 0
RID: Final = 1
LATENCY: Final = 2
STATUS: Final = 3
TEXT: Final = 4
FEATURES: Final = 5
PREDICTION: Final = 6
SCORE: Final = 7
OUTPUT: Final = 8
OFFSET: Final = 9
Row = tuple[float, str, float, str, str | None, dict[str, Any] | None, Any, float | None,
            str | None, int]
BASE_COLUMNS = ("ts", "request_id", "latency_ms", "status", "input_text", "prediction", "score",
                "output_text")
MAX_VERSIONS = 8


@dataclass(frozen=True, slots=True)
class MonitoringSettings:
    window: WindowConfig
    reference: ReferenceConfig
    labels: LabelJoinConfig


def row_of(event: InferenceEvent, offset: int) -> Row:
    text = None
    features = event.input
    if features is not None:
        value = features.get("text")
        if isinstance(value, str):
            text = value
    output = event.output
    return (event.ts_s, event.request_id, event.latency_ms, event.status, text, features,
            None if output is None else output.label, None if output is None else output.score,
            None if output is None else output.text, offset)


class Rows:
    """A bounded deque of rows with the labels joined to them."""

    def __init__(self, size: int | None) -> None:
        self.rows: deque[Row] = deque(maxlen=size)
        self.labels: dict[str, tuple[Any, float | None]] = {}
        self.appended = 0
        self.aged_out = 0

    def append(self, row: Row) -> None:
        self.rows.append(row)
        self.appended += 1

    @property
    def evicted(self) -> int:
        return self.appended - len(self.rows)

    def evict_older_than(self, horizon: float) -> None:
        rows = self.rows
        while rows and rows[0][TS] < horizon:
            rows.popleft()
            self.aged_out += 1

    def attach(self, request_id: str, label: Any, rating: float | None) -> None:
        self.labels[request_id] = (label, rating)
        if self.rows.maxlen and len(self.labels) > 2 * self.rows.maxlen:
            self._prune_labels()

    def _prune_labels(self) -> None:
        live = {row[RID] for row in self.rows}
        self.labels = {rid: v for rid, v in self.labels.items() if rid in live}

    def snapshot(self) -> tuple[list[Row], dict[str, tuple[Any, float | None]]]:
        """Rows and labels as they are now: cheap copies, taken under the model's lock."""
        return list(self.rows), dict(self.labels)

    def frame(self, features: Sequence[str]) -> pd.DataFrame:
        return frame_of(*self.snapshot(), features)


def frame_of(rows: list[Row], labels: dict[str, tuple[Any, float | None]],
             features: Sequence[str]) -> pd.DataFrame:
    """Rows as columns. zip(*rows) transposes in C: a 10k-row window costs milliseconds."""
    columns: list[tuple[Any, ...]] = (list(zip(*rows, strict=True)) if rows
                                      else [()] * (OFFSET + 1))
    joined = [labels.get(rid) for rid in columns[RID]]
    data: dict[str, Any] = {
        "ts": np.asarray(columns[TS], dtype=np.float64),
        "request_id": columns[RID],
        "latency_ms": np.asarray(columns[LATENCY], dtype=np.float64),
        "status": columns[STATUS],
        "input_text": columns[TEXT],
        "prediction": columns[PREDICTION],
        "score": np.asarray([np.nan if v is None else v for v in columns[SCORE]],
                            dtype=np.float64),
        "output_text": columns[OUTPUT],
        "label": [None if j is None else j[0] for j in joined],
        "rating": np.asarray([np.nan if j is None or j[1] is None else j[1] for j in joined],
                             dtype=np.float64),
    }
    for name in features:
        data[name] = [None if f is None else f.get(name) for f in columns[FEATURES]]
    return pd.DataFrame(data)


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
        early = self.join.on_inference(event.request_id, version, row[TS])
        if early is not None:
            self._attach(version, early)

    def add_feedback(self, event: FeedbackEvent) -> None:
        pending = self.join.on_feedback(event)
        if pending is not None:
            self._attach(pending.version, event)

    def _attach(self, version: str, feedback: FeedbackEvent) -> None:
        label = feedback.label if feedback.label is not None else feedback.reference
        for rows in (self.current.get(version), self.references.get(version)):
            if rows is not None:
                rows.attach(feedback.request_id, label, feedback.rating)

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
        newest = max((w.rows[-1][TS] for w in self.current.values() if w.rows), default=None)
        if newest is not None:
            for window in self.current.values():
                window.evict_older_than(newest - max_age)

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
    for column in (*BASE_COLUMNS, "label", "rating"):
        if column not in frame:
            frame[column] = None
    return frame
