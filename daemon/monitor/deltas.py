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
from typing import Any, NamedTuple

import msgspec
import numpy as np
import pandas as pd

LabelItem = tuple[str, tuple[Any, float | None]]  # request_id, (label or reference, rating)


@dataclass(slots=True)
class Cursor:
    """What one backend already holds of one version's windows (ingest side)."""

    serial: int = -1  # which Rows object the copy follows; another one means start over
    appended: int = 0  # rows appended to it when the copy was last fed
    label_seq: int = 0
    reference_size: int = 0  # 0: no reference sent yet


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


@dataclass(frozen=True, slots=True)
class RowBatch:
    """Window rows, encoded once on the ingest side: the text columns as msgpack lists, the
    numbers as raw float64/int64 buffers (3x cheaper than pickling the columns: this runs on
    the ingest process's interpreter lock). Flat features keep only the names the window's
    config keeps (all a frame reads)."""

    size: int
    payload: bytes

    def __len__(self) -> int:
        return self.size


class RowColumns(NamedTuple):
    request_id: list[str]
    status: list[str]
    input_text: list[str | None]
    features: dict[str, list[Any]] | None  # None: no row had features
    prediction: list[Any]
    output_text: list[str | None]
    ts: np.ndarray
    latency_ms: np.ndarray
    score: np.ndarray  # NaN for no score (the frame reads None as NaN too)
    offset: np.ndarray


def pack_rows(rows: Sequence[tuple[Any, ...]], features: Sequence[str]) -> RowBatch:
    """``rows`` are ``WindowRow`` tuples (ts, request_id, latency_ms, status, input_text,
    features, prediction, score, output_text, offset)."""
    n = len(rows)
    if not n:
        return RowBatch(0, b"")
    c = list(zip(*rows, strict=True))  # transposed in C
    flat = c[5]
    packed = None
    if any(f is not None for f in flat):
        packed = {name: [None if f is None else f.get(name) for f in flat] for name in features}
    score = np.asarray([np.nan if v is None else v for v in c[7]], np.float64)
    return RowBatch(n, _encoder.encode((
        c[1], c[3], c[4], packed, c[6], c[8],
        np.fromiter(c[0], np.float64, n).data, np.fromiter(c[2], np.float64, n).data,
        score.data, np.fromiter(c[9], np.int64, n).data)))


def unpack_columns(batch: RowBatch) -> RowColumns:
    if not batch.size:
        empty = np.empty(0, np.float64)
        return RowColumns([], [], [], None, [], [], empty, empty, empty, np.empty(0, np.int64))
    rid, status, text, flat, prediction, output, ts, latency, score, offset = \
        _decoder.decode(batch.payload)
    return RowColumns(rid, status, text, flat, prediction, output,
                      np.frombuffer(ts, np.float64), np.frombuffer(latency, np.float64),
                      np.frombuffer(score, np.float64), np.frombuffer(offset, np.int64))


def pack_labels(items: Sequence[LabelItem]) -> bytes:
    return _encoder.encode(items)


def unpack_labels(payload: bytes) -> list[LabelItem]:
    return [(rid, (label, rating)) for rid, (label, rating) in _decoder.decode(payload)]


@dataclass(frozen=True, slots=True)
class ReferenceRows:
    """A frozen reference, sent once per version: its rows and the labels joined so far."""

    rows: RowBatch
    labels: bytes  # pack_labels


@dataclass(frozen=True, slots=True)
class VersionDelta:
    """One version's change since the backend's cursor, for a version ready to be judged."""

    version: str
    rows: RowBatch  # rows appended since the cursor (every row when ``reset``)
    reset: bool  # the copy starts over: rows and labels
    length: int  # rows in the window now: the copy keeps its newest ``length``
    labels: bytes  # pack_labels: attached since the cursor (every label when reset)
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
