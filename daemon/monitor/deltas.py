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

from daemon.events import ChatMessage

# request_id, (label, reference, rating): ``window_row.Joined`` as a plain tuple
LabelItem = tuple[str, tuple[Any, str | None, float | None]]


@dataclass(slots=True)
class Cursor:
    """What one backend already holds of one version's windows (ingest side)."""

    serial: int = -1  # which Rows object the copy follows; another one means start over
    appended: int = 0  # rows appended to it when the copy was last fed
    label_seq: int = 0
    reference_size: int = 0  # 0: no reference sent yet


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()
# Chats come back as ChatMessage structs, not dicts (the snapshot writer reads them by name).
_chats_decoder = msgspec.msgpack.Decoder(list[list[ChatMessage] | None])


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
    tokens_out: list[int | None]
    finish_reason: list[str | None]
    messages: list[list[ChatMessage] | None]
    ts: np.ndarray
    latency_ms: np.ndarray
    score: np.ndarray  # NaN for no score (the frame reads None as NaN too)
    ttft_ms: np.ndarray  # NaN for no TTFT
    offset: np.ndarray


def _nan_floats(values: Sequence[float | None]) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], np.float64)


def pack_rows(rows: Sequence[tuple[Any, ...]], features: Sequence[str]) -> RowBatch:
    """``rows`` are ``WindowRow`` tuples (ts, request_id, latency_ms, status, input_text,
    features, prediction, score, output_text, offset, ttft_ms, tokens_out, finish_reason,
    messages). A classifier's rows carry no chat: that column is then sent as one None."""
    n = len(rows)
    if not n:
        return RowBatch(0, b"")
    c = list(zip(*rows, strict=True))  # transposed in C
    flat = c[5]
    packed = None
    if any(f is not None for f in flat):
        packed = {name: [None if f is None else f.get(name) for f in flat] for name in features}
    chats = c[13] if any(m is not None for m in c[13]) else None
    return RowBatch(n, _encoder.encode((
        c[1], c[3], c[4], packed, c[6], c[8], c[11], c[12],
        None if chats is None else _encoder.encode(chats),
        np.fromiter(c[0], np.float64, n).data, np.fromiter(c[2], np.float64, n).data,
        _nan_floats(c[7]).data, _nan_floats(c[10]).data,
        np.fromiter(c[9], np.int64, n).data)))


def unpack_columns(batch: RowBatch) -> RowColumns:
    if not batch.size:
        empty = np.empty(0, np.float64)
        return RowColumns([], [], [], None, [], [], [], [], [], empty, empty, empty, empty,
                          np.empty(0, np.int64))
    (rid, status, text, flat, prediction, output, tokens, finish, chats, ts, latency, score,
     ttft, offset) = _decoder.decode(batch.payload)
    return RowColumns(rid, status, text, flat, prediction, output, tokens, finish,
                      [None] * batch.size if chats is None else _chats_decoder.decode(chats),
                      np.frombuffer(ts, np.float64), np.frombuffer(latency, np.float64),
                      np.frombuffer(score, np.float64), np.frombuffer(ttft, np.float64),
                      np.frombuffer(offset, np.int64))


def pack_labels(items: Sequence[LabelItem]) -> bytes:
    return _encoder.encode(items)


def unpack_labels(payload: bytes) -> list[LabelItem]:
    return [(rid, (label, reference, rating))
            for rid, (label, reference, rating) in _decoder.decode(payload)]


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
