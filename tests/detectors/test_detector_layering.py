"""detectors/ stays pure: no daemon/actions/deploy, no Kafka, no clock, no logging; and cheap to
import (evidently and torch load on first use only)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLOCK_CALLS = {"now", "utcnow", "today", "time", "monotonic", "perf_counter"}


def test_detectors_read_no_clock_and_open_no_file() -> None:
    """Which packages detectors may import is an import-linter contract (pyproject.toml); what
    they may not call is checked here."""
    files = sorted((ROOT / "detectors").glob("*.py"))
    assert len(files) >= 8
    for path in files:
        rel = str(path.relative_to(ROOT))
        # datetime is allowed as a type (a report's timestamp is passed in), never as a clock.
        calls = {n.func.attr for n in ast.walk(ast.parse(path.read_text()))
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}
        assert not calls & CLOCK_CALLS, (rel, calls & CLOCK_CALLS)
        assert "open(" not in path.read_text(), rel  # no files: outputs go back to the caller


def test_importing_the_suite_loads_neither_evidently_nor_torch() -> None:
    code = ("import sys, detectors.suite, detectors.config, detectors.embeddings; "
            "print(sorted(m for m in ('evidently', 'torch', 'transformers', 'sklearn') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"
