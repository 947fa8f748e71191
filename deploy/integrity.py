"""sha256 sums of artifact files: written beside every artifact, checked before anything loads.
``read_verified`` checks the very bytes it returns, for loaders that must not reopen files."""

from __future__ import annotations

import hashlib
from pathlib import Path

from lifeguard.errors import IntegrityError
from lifeguard.files import sha256_file


def digest_dir(root: Path, exclude: frozenset[str] = frozenset()) -> dict[str, str]:
    """sha256 of every regular file under ``root``, keyed by POSIX relative path, sorted."""
    sums: dict[str, str] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel not in exclude:
            sums[rel] = sha256_file(path)
    return sums


def verify_dir(root: Path, sums: dict[str, str]) -> None:
    """Raise IntegrityError naming the first file that is missing or differs."""
    for rel, expected in sums.items():
        path = root / rel
        if not path.is_file():
            raise IntegrityError(f"{root}: {rel} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise IntegrityError(
                f"{root}: {rel} has sha256 {actual[:12]}…, expected {expected[:12]}…"
            )


def read_verified(root: Path, sums: dict[str, str]) -> dict[str, bytes]:
    """Each recorded file read once, its sha256 checked on the bytes read, and those bytes
    returned: a loader given them uses what was checked, never a file swapped in after the
    check (the check-then-open gap). Raise IntegrityError as ``verify_dir`` does."""
    files: dict[str, bytes] = {}
    for rel, expected in sums.items():
        path = root / rel
        if not path.is_file():
            raise IntegrityError(f"{root}: {rel} is missing")
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected:
            raise IntegrityError(
                f"{root}: {rel} has sha256 {actual[:12]}…, expected {expected[:12]}…"
            )
        files[rel] = data
    return files
