"""The labelled-data snapshot a trigger captures: every labelled row in a model's windows,
written once as JSON Lines (the format actions.snapshot reads) so a run resumed later trains on
exactly what triggered it."""

from __future__ import annotations

import json
import time
from pathlib import Path

from daemon.monitor.window_store import WindowStore
from lifeguard.files import atomic_write


class SnapshotWriter:
    def __init__(self, windows: WindowStore, directory: Path, min_rows: int = 20) -> None:
        self.windows = windows
        self.directory = directory
        self.min_rows = min_rows

    def __call__(self, model: str) -> Path | None:
        """Write the snapshot; None when the model has fewer than ``min_rows`` labelled rows."""
        windows = self.windows.get(model)
        if windows is None:
            return None
        lines: dict[str, str] = {}
        for row, (label, rating) in windows.labelled_rows():
            record: dict[str, object] = {"request_id": row.request_id, "ts": int(row.ts * 1000)}
            if row.input_text is not None:
                record["text"] = row.input_text
            else:
                record["input"] = row.features or {}
            if label is not None:
                record["label"] = label
            elif rating is not None:
                record["rating"] = rating
            else:
                continue
            lines[row.request_id] = json.dumps(record)
        if len(lines) < self.min_rows:
            return None
        path = self.directory / f"{model}-{time.time_ns()}.jsonl"
        return atomic_write(path, "\n".join(lines.values()) + "\n")
