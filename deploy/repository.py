"""The model repository, in Triton Inference Server's layout, with a sha256 record per version.

    <root>/<model>/config.pbtxt          Triton model config (onnxruntime backend)
    <root>/<model>/<n>/model.onnx        numeric version folders, as Triton scans them
    <root>/<model>/<n>/version.json      sums of every file, tokenizer, parent, run id, gate scores

A version is staged in a hidden folder and renamed into place, so a reader sees all of it or
none of it; Triton ignores non-numeric folders, so the staging area is invisible to it too.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deploy.errors import InvalidNameError, VersionNotFoundError
from deploy.integrity import digest_dir, read_verified, verify_dir
from lifeguard.errors import IntegrityError
from lifeguard.files import atomic_write, fsync_dir
from lifeguard.tasks import TASKS

RECORD_NAME = "version.json"
# Per model: the version rollouts settled on (pinned) and the versions rolled back (withdrawn,
# never served again): what a replica loads when told no version, and what config.pbtxt names.
SERVING_NAME = "serving.json"
MODEL_FILE = "model.onnx"
INFO_FILE = "model_info.json"
# Letters, digits and . _ - ; starts with a letter or digit, so "." and ".." can never match.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_VERSION = re.compile(r"^[1-9][0-9]{0,17}$")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "vocab.txt", "vocab.json", "merges.txt")


def validate_model_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise InvalidNameError(f"invalid model name {name!r}: use letters, digits, '.', '_', '-'")
    return name


def parse_version(version: int | str) -> int:
    """A positive integer version, from an int or its decimal string (no signs, no padding)."""
    if isinstance(version, bool):
        raise InvalidNameError(f"invalid version {version!r}")
    if isinstance(version, int):
        if version < 1:
            raise InvalidNameError(f"invalid version {version!r}: versions start at 1")
        return version
    if isinstance(version, str) and _VERSION.match(version):
        return int(version)
    raise InvalidNameError(f"invalid version {version!r}: expected a positive integer")


@dataclass(frozen=True)
class VersionRecord:
    """Everything known about one published version; stored as ``version.json`` beside it."""

    model: str
    version: int
    files: dict[str, str]
    model_info: dict[str, Any]
    tokenizer: tuple[str, ...]
    parent_version: int | None = None
    run_id: str | None = None
    trigger: str | None = None
    gate_scores: dict[str, float] = field(default_factory=dict)
    published_at: float = 0.0

    @property
    def task(self) -> str:
        return str(self.model_info.get("task", ""))

    @property
    def kv_cache(self) -> tuple[int, int, int] | None:
        return kv_shape(self.model_info)

    def triton_config(self) -> dict[str, Any]:
        """This version's Triton model config (JSON form), KV-cache tensors included: what a
        load request sends, so Triton's ONNX backend finds every tensor of the graph."""
        return triton_config(self.model, self.task, self.version, self.kv_cache)

    def to_json(self) -> str:
        data = asdict(self)
        data["tokenizer"] = list(self.tokenizer)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> VersionRecord:
        data = json.loads(text)
        data["tokenizer"] = tuple(data.get("tokenizer", ()))
        return cls(**data)


class ModelRepository:
    """Reads and atomically extends a Triton-layout repository rooted at ``root``."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"repository root {self.root} is not a directory")

    def models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name))

    def versions(self, model: str) -> list[int]:
        model_dir = self.root / validate_model_name(model)
        if not model_dir.is_dir():
            return []
        return sorted(int(p.name) for p in model_dir.iterdir()
                      if p.is_dir() and _VERSION.match(p.name))

    def latest(self, model: str) -> int | None:
        versions = self.versions(model)
        return versions[-1] if versions else None

    def _serving(self, model: str) -> dict[str, Any]:
        path = self.root / validate_model_name(model) / SERVING_NAME
        if not path.is_file():
            return {"pinned": None, "withdrawn": {}}
        return dict(json.loads(path.read_text()))

    def withdrawn(self, model: str) -> dict[int, str]:
        """Versions withdrawn by a rollback, with why."""
        return {int(k): str(v) for k, v in self._serving(model)["withdrawn"].items()}

    def pinned(self, model: str) -> int | None:
        pinned = self._serving(model)["pinned"]
        return None if pinned is None else int(pinned)

    def serving_version(self, model: str) -> int | None:
        """What a replica loads when told no version: the version the last rollout settled
        on, else the latest; never a withdrawn one."""
        gone = self.withdrawn(model)
        versions = [v for v in self.versions(model) if v not in gone]
        pinned = self.pinned(model)
        if pinned is not None and pinned in versions:
            return pinned
        return versions[-1] if versions else None

    def pin(self, model: str, version: int) -> None:
        """A rollout settled on ``version`` (promoted, or restored by a rollback)."""
        self._update_serving(model, pinned=parse_version(version))

    def withdraw(self, model: str, version: int, reason: str,
                 stable: int | None = None) -> None:
        """Record that ``version`` was rolled back (to ``stable``): a restarted replica, and a
        Triton reading config.pbtxt, serve ``stable`` instead, never ``version``."""
        self._update_serving(model, withdrawn=(parse_version(version), reason[:500]),
                             pinned=stable)

    def _update_serving(self, model: str, pinned: int | None = None,
                        withdrawn: tuple[int, str] | None = None) -> None:
        model_dir = self.root / validate_model_name(model)
        with _locked(model_dir / ".publish.lock"):
            serving = self._serving(model)
            if pinned is not None:
                serving["pinned"] = pinned
            if withdrawn is not None:
                serving["withdrawn"] = {**serving["withdrawn"], str(withdrawn[0]): withdrawn[1]}
            atomic_write(model_dir / SERVING_NAME, json.dumps(serving, sort_keys=True))
            self._write_config(model)

    def _write_config(self, model: str) -> None:
        latest = self.latest(model)
        if latest is None:
            return
        info = self.record(model, latest).model_info
        settled = self.pinned(model) is not None or self.withdrawn(model)
        atomic_write(self.root / model / "config.pbtxt",
                      triton_config_pbtxt(model, info,
                                          self.serving_version(model) if settled else None))

    def version_dir(self, model: str, version: int | str) -> Path:
        return self.root / validate_model_name(model) / str(parse_version(version))

    def record(self, model: str, version: int | str) -> VersionRecord:
        path = self.version_dir(model, version) / RECORD_NAME
        if not path.is_file():
            raise VersionNotFoundError(f"{model} version {version} is not in {self.root}")
        return VersionRecord.from_json(path.read_text())

    def find_by_run(self, model: str, run_id: str) -> VersionRecord | None:
        """The version an action run already published, so a re-run never publishes twice."""
        for version in reversed(self.versions(model)):
            record = self.record(model, version)
            if record.run_id == run_id:
                return record
        return None

    def verify(self, model: str, version: int | str) -> VersionRecord:
        """Check every file against its recorded sum; raise IntegrityError if one differs."""
        record = self.record(model, version)
        directory = self.version_dir(model, version)
        verify_dir(directory, record.files)
        extra = set(digest_dir(directory, frozenset({RECORD_NAME}))) - set(record.files)
        if extra:
            raise IntegrityError(f"{directory}: unrecorded files {sorted(extra)}")
        return record

    def read_verified(self, model: str, version: int | str) -> tuple[VersionRecord,
                                                                     dict[str, bytes]]:
        """The version's files as bytes, each checked against its recorded sum as read: load
        from these (``deploy.inference.load_onnx(..., files=)``), never from the directory."""
        record = self.record(model, version)
        directory = self.version_dir(model, version)
        files = read_verified(directory, record.files)
        extra = set(digest_dir(directory, frozenset({RECORD_NAME}))) - set(record.files)
        if extra:
            raise IntegrityError(f"{directory}: unrecorded files {sorted(extra)}")
        return record, files

    def publish(self, model: str, source: Path | str, *, run_id: str | None = None,
                trigger: str | None = None, parent_version: int | None = None,
                gate_scores: Mapping[str, float] | None = None) -> VersionRecord:
        """Copy an exported model dir in as the next version; idempotent per ``run_id``."""
        validate_model_name(model)
        source = Path(source)
        info = _read_model_info(source)
        model_dir = self.root / model
        model_dir.mkdir(parents=True, exist_ok=True)
        with _locked(model_dir / ".publish.lock"):
            if run_id is not None and (done := self.find_by_run(model, run_id)) is not None:
                return done
            for stale in model_dir.glob(".staging-*"):  # left by a publisher killed mid-copy
                shutil.rmtree(stale, ignore_errors=True)
            staging = model_dir / f".staging-{uuid.uuid4().hex}"
            try:
                shutil.copytree(source, staging, ignore=shutil.ignore_patterns(RECORD_NAME))
                version = (self.latest(model) or 0) + 1
                record = VersionRecord(
                    model=model, version=version, files=digest_dir(staging), model_info=info,
                    tokenizer=tuple(n for n in _TOKENIZER_FILES if (staging / n).is_file()),
                    parent_version=parent_version, run_id=run_id, trigger=trigger,
                    gate_scores={k: float(v) for k, v in (gate_scores or {}).items()},
                    published_at=time.time(),
                )
                (staging / RECORD_NAME).write_text(record.to_json())
                _fsync_tree(staging)
                # rename() of a directory is atomic: readers see the whole version or nothing.
                os.rename(staging, model_dir / str(version))
                fsync_dir(model_dir)
                self._write_config(model)
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
        return record


def triton_config(model: str, task: str, version: int | None = None,
                  kv_cache: Sequence[int] | None = None) -> dict[str, Any]:
    """The model config as Triton's JSON form, as sent in a load request's ``config``; a causal
    LM exported with its KV cache (``kv_cache`` = layers, heads, head dim) lists its position
    ids, past and present tensors too."""
    logits_dims = [-1, -1] if task == "sequence-classification" else [-1, -1, -1]
    policy: dict[str, Any] = ({"specific": {"versions": [version]}} if version is not None
                              else {"latest": {"num_versions": 1}})
    inputs = [{"name": n, "data_type": "TYPE_INT64", "dims": [-1, -1]}
              for n in ("input_ids", "attention_mask")]
    outputs = [{"name": "logits", "data_type": "TYPE_FP32", "dims": logits_dims}]
    if kv_cache is not None:
        layers, heads, head_dim = kv_cache
        inputs.append({"name": "position_ids", "data_type": "TYPE_INT64", "dims": [-1, -1]})
        for prefix, tensors in (("past_key_values", inputs), ("present", outputs)):
            tensors.extend({"name": f"{prefix}.{i}.{kind}", "data_type": "TYPE_FP32",
                            "dims": [-1, heads, -1, head_dim]}
                           for i in range(layers) for kind in ("key", "value"))
    return {
        "name": model,
        "backend": "onnxruntime",
        "max_batch_size": 0,
        "input": inputs,
        "output": outputs,
        "version_policy": policy,
    }


def kv_shape(info: Mapping[str, Any]) -> tuple[int, int, int] | None:
    """(layers, heads, head dim) of a model_info's KV cache; None for a graph without one."""
    kv = info.get("kv_cache")
    return None if not kv else (int(kv["layers"]), int(kv["heads"]), int(kv["head_dim"]))


def config_mismatch(override: Mapping[str, Any], expected: Mapping[str, Any]) -> str | None:
    """Why a load request's config override does not fit the version (tensor names Triton's
    ONNX backend would refuse), or None when it does or names no tensors."""
    for key in ("input", "output"):
        if key not in override:
            continue
        given = {t.get("name") for t in override[key] if isinstance(t, Mapping)}
        wanted = {t["name"] for t in expected[key]}
        if given != wanted:
            missing, extra = sorted(wanted - given), sorted(str(n) for n in given - wanted)
            return f"config {key}s do not match the model: missing {missing}, unknown {extra}"
    return None


def triton_config_pbtxt(model: str, info: Mapping[str, Any], pinned: int | None = None) -> str:
    """Triton's config.pbtxt: the latest version, or ``pinned`` once a version was withdrawn
    (Triton would otherwise pick the withdrawn one up again on a restart)."""
    config = triton_config(model, str(info["task"]), kv_cache=kv_shape(info))
    lines = [f'name: "{model}"', 'backend: "onnxruntime"', "max_batch_size: 0"]
    for key in ("input", "output"):
        for tensor in config[key]:
            dims = ", ".join(str(d) for d in tensor["dims"])
            lines.append(f'{key} {{ name: "{tensor["name"]}" data_type: {tensor["data_type"]} '
                         f"dims: [ {dims} ] }}")
    lines.append("version_policy: { latest: { num_versions: 1 } }" if pinned is None
                 else f"version_policy: {{ specific: {{ versions: [ {pinned} ] }} }}")
    return "\n".join(lines) + "\n"


def _read_model_info(source: Path) -> dict[str, Any]:
    if not (source / MODEL_FILE).is_file():
        raise ValueError(f"{source} has no {MODEL_FILE}: not an exported model dir")
    try:
        info = json.loads((source / INFO_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{source}/{INFO_FILE} is missing or not JSON: {exc}") from None
    if info.get("task") not in TASKS:
        raise ValueError(f"{source}/{INFO_FILE}: task must be one of {TASKS}")
    return dict(info)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    fsync_dir(root)
