"""The rooms' arrows are import-linter contracts (pyproject.toml, run by `make lint`): they hold
on the tree, and a module that breaks one makes `lint-imports` fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lifeguard", "daemon", "detectors", "actions", "deploy", "simulator", "harness")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(binary), "--no-cache"], cwd=root, env=env, text=True,
                          capture_output=True, timeout=120)


def test_the_tree_keeps_every_contract() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_detector_that_imports_the_daemon_breaks_the_build(tmp_path: Path) -> None:
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "detectors" / "rogue.py").write_text(
        '"""A detector that reaches into the daemon."""\nfrom daemon.monitor import windows\n')
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "detectors are pure" in result.stdout and "BROKEN" in result.stdout
    assert "detectors.rogue -> daemon.monitor.windows" in result.stdout
