"""The model artifact contract: the files of an exported directory, ``model_info.json`` (what
the graph computes) and ``artifact.json`` (the sha256 sums checked before anything loads).

An exported directory holds ``model.onnx`` (inputs ``input_ids``/``attention_mask`` int64 with
dynamic batch and sequence axes, output ``logits``; a causal LM's graph also takes
``position_ids`` and its KV cache, see deploy.generation), maybe ``model.onnx.data`` (external
weights of a model over 2 GB), the tokenizer, ``model_info.json`` and,
when an action step wrote it, ``artifact.json`` whose sha256 sums are checked before load.
Files are read once: the sums are checked on the bytes read, and everything built from the
directory is built from those same bytes (no file is opened again after it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.integrity import read_verified, verify_dir
from lifeguard.errors import IntegrityError
from lifeguard.tasks import TASKS

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"  # external weights, beside the graph, when over 2 GB
INFO_FILE = "model_info.json"
ARTIFACT_FILE = "artifact.json"
PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class ModelInfo:
    """``model_info.json``: what the graph computes and how its inputs are made."""

    task: str
    max_length: int
    precision: str
    labels: tuple[str, ...] = ()
    kv_cache: tuple[int, int, int] | None = None  # causal LMs: (layers, kv heads, head dim)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")
        if self.task == "sequence-classification" and len(self.labels) < 2:
            raise ValueError("a classifier needs at least two labels")

    @classmethod
    def read(cls, model_dir: Path) -> ModelInfo:
        return cls.parse((Path(model_dir) / INFO_FILE).read_bytes())

    @classmethod
    def parse(cls, data: bytes) -> ModelInfo:
        raw = json.loads(data)
        return cls(
            task=raw["task"],
            max_length=int(raw["max_length"]),
            precision=raw["precision"],
            labels=tuple(raw.get("labels", ())),
            kv_cache=(None if raw.get("kv_cache") is None else (
                int(raw["kv_cache"]["layers"]), int(raw["kv_cache"]["heads"]),
                int(raw["kv_cache"]["head_dim"]))),
        )

    def write(self, model_dir: Path) -> None:
        raw: dict[str, Any] = {
            "task": self.task,
            "max_length": self.max_length,
            "precision": self.precision,
        }
        if self.labels:
            raw["labels"] = list(self.labels)
        if self.kv_cache is not None:
            raw["kv_cache"] = dict(zip(("layers", "heads", "head_dim"), self.kv_cache,
                                       strict=True))
        (Path(model_dir) / INFO_FILE).write_text(json.dumps(raw, indent=2) + "\n")


def verify_artifact(model_dir: Path) -> None:
    """Check the sums in ``artifact.json`` when there is one; raise IntegrityError on mismatch."""
    record = Path(model_dir) / ARTIFACT_FILE
    if not record.is_file():
        return
    try:
        files = json.loads(record.read_text())["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"{record}: unreadable artifact record ({exc})") from exc
    verify_dir(Path(model_dir), files)


def read_artifact(model_dir: Path) -> dict[str, bytes]:
    """Every file of an exported directory, read once: checked against ``artifact.json``'s
    sums as read when there is one (every other file is then refused), else taken as is."""
    model_dir = Path(model_dir)
    record = model_dir / ARTIFACT_FILE
    if not record.is_file():
        return {p.relative_to(model_dir).as_posix(): p.read_bytes()
                for p in sorted(model_dir.rglob("*")) if p.is_file()}
    raw = record.read_bytes()
    try:
        sums = json.loads(raw)["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"{record}: unreadable artifact record ({exc})") from exc
    return {**read_verified(model_dir, sums), ARTIFACT_FILE: raw}
