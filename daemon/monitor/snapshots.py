"""The labelled-data snapshot a trigger captures: every row of the serving version(s) in a
model's windows with joined feedback (its prompt or chat, its answer, and the label, reference
and rating), written once as JSON Lines (the format actions.snapshot reads) so a resumed run
trains on what triggered it. A version nothing vouches for never reaches it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection
from pathlib import Path

from daemon.events import render_messages
from daemon.monitor.window_row import Joined, WindowRow
from daemon.monitor.window_store import WindowStore
from lifeguard.files import atomic_write


class SnapshotWriter:
    def __init__(self, windows: WindowStore, directory: Path, min_rows: int = 20,
                 serving: Callable[[str], Collection[str] | None] | None = None) -> None:
        self.windows = windows
        # Which versions' rows to train on: the deployed one (the version gate's answer) by
        # default; None from it means every version the windows admitted.
        self.serving = serving or windows.versions.serving
        self.directory = directory
        self.min_rows = min_rows

    def __call__(self, model: str) -> Path | None:
        """Write the snapshot; None when the model has fewer than ``min_rows`` labelled rows."""
        windows = self.windows.get(model)
        if windows is None:
            return None
        lines: dict[str, str] = {}
        for row, joined in windows.labelled_rows(self.serving(model)):
            record = snapshot_record(row, joined)
            if record is not None:
                lines[row.request_id] = json.dumps(record, ensure_ascii=False)
        if len(lines) < self.min_rows:
            return None
        path = self.directory / f"{model}-{time.time_ns()}.jsonl"
        return atomic_write(path, "\n".join(lines.values()) + "\n")


def snapshot_record(row: WindowRow, joined: Joined) -> dict[str, object] | None:
    """One snapshot line: the input (a chat as plain text and as messages), the answer, and
    every part of the feedback; None when the feedback carries no target."""
    if joined.label is None and joined.reference is None and joined.rating is None:
        return None
    record: dict[str, object] = {"request_id": row.request_id, "ts": int(row.ts * 1000)}
    if row.messages is not None:
        record["text"] = render_messages(row.messages)
        record["messages"] = [{"role": m.role, "content": m.content} for m in row.messages]
    elif row.input_text is not None:
        record["text"] = row.input_text
    else:
        record["input"] = row.features or {}
    if row.output_text is not None:
        record["output"] = row.output_text
    if joined.label is not None:
        record["label"] = joined.label
    if joined.reference is not None:
        record["reference"] = joined.reference
    if joined.rating is not None:
        record["rating"] = joined.rating
    return record
