"""What an evaluation backend is sent of a model's windows: only what changed since it last saw
them (new rows as columns, new labels, the window's length, a frozen reference once).

The ingest side cuts deltas against a ``Cursor`` per version; the evaluation side applies them
to a ``WindowCopy`` (``window_copy``) and builds the frame the ingest process would build. Rows
travel as numpy columns and lists, never as pickled frames. This module is the wire format
only: it imports nothing of the windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

LabelItem = tuple[str, tuple[Any, float | None]]  # request_id, (label or reference, rating)


@dataclass(slots=True)
class Cursor:
    """What one backend already holds of one version's windows (ingest side)."""

    serial: int = -1  # which Rows object the copy follows; another one means start over
    appended: int = 0  # rows appended to it when the copy was last fed
    label_seq: int = 0
    label_epoch: int = -1
    reference_size: int = 0  # 0: no reference sent yet


@dataclass(frozen=True, slots=True)
class RowBatch:
    """Window rows as columns: numbers as float64/int64 arrays, the rest as lists. Flat
    features keep only the names the window's config keeps (all a frame reads)."""

    ts: np.ndarray
    request_id: list[str]
    latency_ms: np.ndarray
    status: list[str]
    input_text: list[str | None]
    features: dict[str, list[Any]] | None  # None: no row had features
    prediction: list[Any]
    score: np.ndarray  # NaN for no score (the frame reads None as NaN too)
    output_text: list[str | None]
    offset: np.ndarray

    def __len__(self) -> int:
        return len(self.request_id)


def pack_rows(rows: Sequence[tuple[Any, ...]], features: Sequence[str]) -> RowBatch:
    if not rows:
        empty = np.empty(0, np.float64)
        return RowBatch(empty, [], empty, [], [], None, [], empty, [], np.empty(0, np.int64))
    c = list(zip(*rows, strict=True))  # transposed in C
    flat = c[5]
    packed = None
    if any(f is not None for f in flat):
        packed = {name: [None if f is None else f.get(name) for f in flat] for name in features}
    return RowBatch(
        np.asarray(c[0], np.float64), list(c[1]), np.asarray(c[2], np.float64), list(c[3]),
        list(c[4]), packed, list(c[6]),
        np.asarray([np.nan if v is None else v for v in c[7]], np.float64),
        list(c[8]), np.asarray(c[9], np.int64))


@dataclass(frozen=True, slots=True)
class ReferenceRows:
    """A frozen reference, sent once per version: its rows and the labels joined so far."""

    rows: RowBatch
    labels: list[LabelItem]


@dataclass(frozen=True, slots=True)
class VersionDelta:
    """One version's change since the backend's cursor, for a version ready to be judged."""

    version: str
    rows: RowBatch  # rows appended since the cursor (every row when ``reset``)
    reset: bool
    length: int  # rows in the window now: the copy keeps its newest ``length``
    labels: list[LabelItem]  # labels attached since the cursor (every label when reset)
    labels_reset: bool
    reference: ReferenceRows | pd.DataFrame | None  # None: the backend holds it already
    reference_size: int


@dataclass(frozen=True, slots=True)
class PassDelta:
    """One model's pass request: the versions to judge, and what the cut has seen."""

    model: str
    versions: list[VersionDelta]
    offset: int  # the newest offset the cut has seen
    live: set[str]  # every version with a current window
    forget: dict[str, set[str]] = field(default_factory=dict)  # other models: live versions
