"""Content-addressed step outputs: a step's folder is named by the hash of its inputs, written
beside a temporary name and renamed when complete, with ``artifact.json`` (sha256 of every file
and a small metadata record). A finished folder is reused, after its sums are checked."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actions.contract import StepResult
from actions.errors import BadInput
from deploy.integrity import digest_dir, verify_dir
from deploy.model_artifact import ARTIFACT_FILE
from lifeguard.errors import IntegrityError
from lifeguard.files import sha256_file

SCHEMA = "lifeguard-artifact/v1"


def canonical_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def input_digest(path: Path | None) -> str | None:
    """sha256 identity of an input file or directory (a directory's artifact sums are checked
    and reused when it has them)."""
    if path is None:
        return None
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        raise BadInput(f"input {path} does not exist")
    record = read_record(path)
    if record is not None:
        return canonical_hash(record["files"])
    return canonical_hash(digest_dir(path))


def read_record(artifact_dir: Path) -> dict[str, Any] | None:
    """The verified artifact record of a folder; None when it has none; IntegrityError when
    it does not match its files (or cannot be read, so cannot vouch for them)."""
    path = Path(artifact_dir) / ARTIFACT_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        files = record["files"]
        verify_dir(Path(artifact_dir), files)
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"{path}: unreadable artifact record ({exc})") from exc
    return dict(record)


def write_record(
    artifact_dir: Path, step: str, key: str, run_id: str, metadata: dict[str, Any],
    inputs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    files = digest_dir(Path(artifact_dir), exclude=frozenset({ARTIFACT_FILE}))
    record = {
        "schema": SCHEMA, "step": step, "key": key, "run_id": run_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inputs": inputs or {}, "metadata": metadata, "files": files,
    }
    (Path(artifact_dir) / ARTIFACT_FILE).write_text(json.dumps(record, indent=2, default=str))
    return record


@dataclass(frozen=True)
class Published:
    path: Path
    record: dict[str, Any]
    cached: bool


def step_key(step: str, version: int, inputs: dict[str, Any]) -> str:
    return canonical_hash({"step": step, "version": version, "inputs": inputs})


def work_dir(output_dir: Path, step: str, key: str) -> Path:
    """Scratch space that survives a crash (checkpoints), removed once the step publishes."""
    return Path(output_dir) / f".work-{step}-{key[:16]}"


def publish(
    output_dir: Path,
    step: str,
    key: str,
    run_id: str,
    inputs: dict[str, Any],
    build: Callable[[Path], dict[str, Any]],
) -> Published:
    """Return the finished folder for ``key``, building it with ``build(tmp_dir) -> metadata``
    only when no earlier run did. A half-written folder never carries the final name."""
    output_dir = Path(output_dir)
    final = output_dir / f"{step}-{key[:16]}"
    record = read_record(final)
    if record is not None and record.get("key") == key:
        return Published(final, record, cached=True)
    if final.exists():  # a folder without a valid record is not ours to trust or reuse
        raise IntegrityError(f"{final} exists without a matching artifact record")
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = output_dir / f".tmp-{step}-{key[:16]}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        metadata = build(tmp)
        record = write_record(tmp, step, key, run_id, metadata, inputs)
        try:
            os.rename(tmp, final)
        except OSError:  # another worker published the same key first: same inputs, its copy
            other = read_record(final)
            if other is None or other.get("key") != key:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return Published(final, other, cached=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(work_dir(output_dir, step, key), ignore_errors=True)
    return Published(final, record, cached=False)


def step_result(step: str, published: Published, model_dir: Path) -> StepResult:
    """A built-in step's result: ``model`` (what the next step takes) and the step's own
    folder, with the record's metadata, ``cached`` and the content ``key`` as evidence."""
    evidence = {**published.record["metadata"], "cached": published.cached,
                "key": published.record["key"]}
    return StepResult.of({"model": model_dir, step: published.path}, evidence)
