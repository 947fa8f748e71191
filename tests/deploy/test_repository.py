"""The model repository: Triton layout, atomic publish, sums checked, names validated."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from deploy.errors import InvalidNameError, VersionNotFoundError
from deploy.repository import ModelRepository, parse_version, validate_model_name
from lifeguard.errors import IntegrityError


def exported(tmp_path: Path, name: str = "src", payload: bytes = b"onnx-bytes") -> Path:
    """A directory shaped like an exported model (content is opaque to the repository)."""
    src = tmp_path / name
    src.mkdir()
    (src / "model.onnx").write_bytes(payload)
    (src / "tokenizer.json").write_text("{}")
    (src / "model_info.json").write_text(json.dumps(
        {"task": "sequence-classification", "labels": ["negative", "positive"],
         "max_length": 32, "precision": "fp32"}))
    return src


def test_publish_writes_triton_layout_and_record(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    first = repo.publish("sentiment", exported(tmp_path), run_id="run-1", trigger="drift",
                         gate_scores={"accuracy": 0.91})
    second = repo.publish("sentiment", exported(tmp_path, "src2", b"other"), run_id="run-2",
                          parent_version=first.version)
    assert (first.version, second.version) == (1, 2)
    model_dir = tmp_path / "repo" / "sentiment"
    assert sorted(p.name for p in model_dir.iterdir() if not p.name.startswith(".")) == [
        "1", "2", "config.pbtxt"]
    config = (model_dir / "config.pbtxt").read_text()
    assert 'backend: "onnxruntime"' in config and "TYPE_INT64" in config
    stored = repo.record("sentiment", 2)
    assert stored.parent_version == 1 and stored.run_id == "run-2"
    assert set(stored.files) == {"model.onnx", "tokenizer.json", "model_info.json"}
    assert stored.tokenizer == ("tokenizer.json",)
    assert repo.record("sentiment", 1).gate_scores == {"accuracy": 0.91}
    assert repo.record("sentiment", 1).trigger == "drift"
    assert not list(model_dir.glob(".staging-*"))  # nothing half-written is left behind


def test_publish_is_idempotent_per_run_id(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    src = exported(tmp_path)
    assert repo.publish("m", src, run_id="r").version == 1
    assert repo.publish("m", src, run_id="r").version == 1
    assert repo.versions("m") == [1]


def test_concurrent_publishers_get_distinct_whole_versions(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    sources = [exported(tmp_path, f"s{i}", bytes([i]) * 1000) for i in range(6)]
    threads = [threading.Thread(target=repo.publish, args=("m", s), kwargs={"run_id": f"r{i}"})
               for i, s in enumerate(sources)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert repo.versions("m") == [1, 2, 3, 4, 5, 6]
    for version in repo.versions("m"):
        repo.verify("m", version)  # each version is complete and matches its own sums


def test_verify_refuses_modified_missing_and_extra_files(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    version = repo.publish("m", exported(tmp_path)).version
    vdir = repo.version_dir("m", version)
    (vdir / "model.onnx").write_bytes(b"onnx-bytez")
    with pytest.raises(IntegrityError, match=r"model\.onnx"):
        repo.verify("m", version)
    (vdir / "model.onnx").write_bytes(b"onnx-bytes")
    repo.verify("m", version)
    (vdir / "evil.py").write_text("import os")
    with pytest.raises(IntegrityError, match="unrecorded"):
        repo.verify("m", version)
    (vdir / "evil.py").unlink()
    (vdir / "tokenizer.json").unlink()
    with pytest.raises(IntegrityError, match="missing"):
        repo.verify("m", version)


@pytest.mark.parametrize("name", ["", "..", "../etc", "a/b", ".hidden", "a b", "x" * 200,
                                  "a\\b", "ok/../../x"])
def test_bad_model_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidNameError):
        validate_model_name(name)


@pytest.mark.parametrize("version", ["0", "-1", "01", "1/..", "..", "1e3", " 1", 0, True])
def test_bad_versions_are_refused(version: object) -> None:
    with pytest.raises(InvalidNameError):
        parse_version(version)  # type: ignore[arg-type]


def test_unknown_version_and_bad_source(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    with pytest.raises(VersionNotFoundError):
        repo.record("m", 3)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"model\.onnx"):
        repo.publish("m", empty)
    assert repo.versions("m") == []


def test_a_publisher_killed_mid_copy_leaves_nothing_visible(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    repo.publish("m", exported(tmp_path))
    dead = tmp_path / "repo" / "m" / ".staging-deadbeef"
    dead.mkdir()
    (dead / "model.onnx").write_bytes(b"half")
    assert repo.versions("m") == [1]  # a half-copied version is never listed
    repo.publish("m", exported(tmp_path, "src2", b"next"))
    assert repo.versions("m") == [1, 2] and not dead.exists()
