"""lifeguard.files: the one atomic write (whole or nothing, mode from the first byte) and the
one sha256 of a file that every room uses."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from lifeguard.files import atomic_write, sha256_file


def test_atomic_write_replaces_whole_and_keeps_a_secret_private(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "spec.json"
    atomic_write(path, "old")
    atomic_write(path, b"new", mode=0o600)
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["spec.json"]  # no temporary left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    atomic_write(path, "whole")
    with pytest.raises(TypeError):
        atomic_write(path, 42)  # type: ignore[arg-type]  # fails mid-write
    assert path.read_text() == "whole" and len(list(tmp_path.iterdir())) == 1


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # more than one read chunk
    (tmp_path / "w.bin").write_bytes(data)
    assert sha256_file(tmp_path / "w.bin") == hashlib.sha256(data).hexdigest()
