"""The labelled data snapshot a trigger captures (inference inputs joined with their feedback),
how it is read, and the deterministic split that keeps the gate's slice out of training.

Format: JSON Lines, one object per labelled request::

    {"request_id": "r-1", "text": "the battery died", "label": "negative", "ts": 1732838400000}
    {"request_id": "r-2", "input": {"text": "..."}, "rating": 0.8, "output": "...", "ts": "..."}
    {"request_id": "r-3", "text": "Translate: hi", "reference": "salut", "ts": "2026-11-29T..."}
    {"request_id": "r-4", "text": "user: my router blinks", "messages": [{"role": "user",
     "content": "my router blinks"}], "output": "Restart it.", "rating": 0.0,
     "reference": "Hold the reset pin for ten seconds."}

- ``request_id`` (str, required): the join key; a repeated id keeps its last row.
- ``text`` (str) or ``input`` (``{"text": ...}`` as in InferenceEvent, or a flat feature object,
  rendered as ``"key: value; ..."`` in key order): the model's input. One is required. For a
  chat, ``text`` is the chat as plain ``role: content`` lines and ``messages`` the chat itself
  (a list of ``{"role", "content"}``), for a tokenizer's chat template.
- targets: a ``label`` (a class name, classifiers), or a ``reference`` (the wanted answer to
  ``text``, generators) and/or a ``rating`` (a number in [0, 1]); ``output`` is the answer
  the model gave. At least one target; a label beside a reference is an error.
- ``ts`` (RFC 3339 string or epoch ms, optional) and unknown fields are kept and ignored.

A generator trains on references first, then on its own answers rated >= ``GOOD_RATING``;
an answer rated below it never (see ``generator_pairs``).

The holdout is chosen by a hash of ``request_id``: fine_tune and evaluate compute the same
split independently, and a row never moves between train and holdout as the snapshot grows.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actions.errors import BadInput

GOOD_RATING = 0.5
ROLES = frozenset({"system", "user", "assistant", "tool"})
Messages = tuple[tuple[str, str | None], ...]  # (role, content) per turn


@dataclass(frozen=True)
class Row:
    request_id: str
    text: str
    label: str | None = None
    reference: str | None = None
    rating: float | None = None
    output: str | None = None
    ts: str | int | float | None = None
    messages: Messages | None = None  # the chat, when the prompt was one


def _text_of(obj: dict[str, Any], where: str) -> str:
    if isinstance(obj.get("text"), str):
        return str(obj["text"])
    value = obj.get("input")
    if isinstance(value, dict):
        if isinstance(value.get("text"), str):
            return str(value["text"])
        if value:
            return "; ".join(f"{k}: {value[k]}" for k in sorted(value))
    raise BadInput(f"{where}: needs 'text' or a non-empty 'input'")


def parse_row(obj: Any, where: str) -> Row:
    if not isinstance(obj, dict):
        raise BadInput(f"{where}: not a JSON object")
    rid = obj.get("request_id")
    if not isinstance(rid, str) or not rid:
        raise BadInput(f"{where}: 'request_id' must be a non-empty string")
    targets = [k for k in ("label", "reference", "rating") if obj.get(k) is not None]
    if not targets:
        raise BadInput(f"{where}: needs a label, a reference or a rating")
    if "label" in targets and "reference" in targets:
        raise BadInput(f"{where}: a label (a class) and a reference (an answer) exclude each "
                       "other")
    rating = obj.get("rating")
    if rating is not None:
        if isinstance(rating, bool) or not isinstance(rating, int | float):
            raise BadInput(f"{where}: 'rating' must be a number")
        if not (math.isfinite(rating) and 0.0 <= rating <= 1.0):
            raise BadInput(f"{where}: 'rating' must be in [0, 1], got {rating}")
    for name in ("label", "reference", "output"):
        if obj.get(name) is not None and not isinstance(obj[name], str):
            raise BadInput(f"{where}: '{name}' must be a string")
    return Row(
        request_id=rid, text=_text_of(obj, where), label=obj.get("label"),
        reference=obj.get("reference"), rating=None if rating is None else float(rating),
        output=obj.get("output"), ts=obj.get("ts"), messages=_messages_of(obj, where),
    )


def _messages_of(obj: dict[str, Any], where: str) -> Messages | None:
    value = obj.get("messages")
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise BadInput(f"{where}: 'messages' must be a non-empty list")
    turns = []
    for i, turn in enumerate(value):
        if (not isinstance(turn, dict) or turn.get("role") not in ROLES
                or not isinstance(turn.get("content"), str | None)):
            raise BadInput(f"{where}: messages[{i}] must be {{role: one of {sorted(ROLES)}, "
                           "content: a string or null}")
        turns.append((str(turn["role"]), turn.get("content")))
    return tuple(turns)


def read_snapshot(path: Path) -> list[Row]:
    """All rows of a snapshot file, validated, deduplicated by request_id (last wins)."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"snapshot {path} does not exist")
    rows: dict[str, Row] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise BadInput(f"{path}:{n}: invalid JSON ({exc})") from exc
            row = parse_row(obj, f"{path}:{n}")
            rows.pop(row.request_id, None)  # last wins, and moves to the end
            rows[row.request_id] = row
    return list(rows.values())


def write_snapshot(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    """Write rows as JSONL (used by tests, the bench and the daemon's capture)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def in_holdout(request_id: str, fraction: float) -> bool:
    bucket = int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big")
    return bucket / 2**64 < fraction


def split_holdout(rows: Sequence[Row], fraction: float) -> tuple[list[Row], list[Row]]:
    """(train, holdout) by request_id hash; the same call always makes the same split."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    train: list[Row] = []
    holdout: list[Row] = []
    for row in rows:
        (holdout if in_holdout(row.request_id, fraction) else train).append(row)
    return train, holdout


def classifier_pairs(
    rows: Sequence[Row], labels: Sequence[str]
) -> tuple[list[tuple[str, int]], int]:
    """(text, label index) of rows whose label the model knows, and how many were skipped."""
    index = {name: i for i, name in enumerate(labels)}
    pairs = [(r.text, index[r.label]) for r in rows if r.label in index]
    return pairs, len(rows) - len(pairs)


def generator_pairs(rows: Sequence[Row], min_rating: float = GOOD_RATING,
                    ) -> tuple[list[tuple[str, str]], int]:
    """(prompt, target) pairs and how many rows gave none: every reference first (a corrected
    answer beats anything the model said, whatever its rating), then the model's own answers
    rated >= ``min_rating``. An answer rated below it is never a target."""
    references = [(r.text, r.reference) for r in rows if r.reference is not None]
    rated = [(r.text, r.output) for r in rows
             if r.reference is None and r.rating is not None and r.rating >= min_rating
             and r.output]
    pairs: list[tuple[str, str]] = [*references, *rated]
    return pairs, len(rows) - len(pairs)
