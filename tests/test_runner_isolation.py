"""Layering the runner depends on: steps import their contract without the daemon, and the
daemon's control side (store, policy, runner, API, CLI) never loads torch in its process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _modules_after(code: str) -> set[str]:
    probe = code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=ROOT, timeout=120, check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_step_contract_imports_nothing_of_the_daemon() -> None:
    loaded = _modules_after("import actions.contract, actions.steps")
    assert not {m for m in loaded if m == "daemon" or m.startswith("daemon.")}
    assert "torch" not in loaded


def test_control_side_of_the_daemon_never_loads_torch(tmp_path: Path) -> None:
    paths = {"db": str(tmp_path / "state.db"), "log": str(tmp_path / "log"),
             "runs": str(tmp_path / "runs"), "tests": str(ROOT / "tests")}
    code = f"""
import daemon.act.store, daemon.act.policy, daemon.act.runner, daemon.act.alerts
import daemon.act.api, daemon.cli
from daemon.act.runner import Runner
from daemon.act.runs import ActionRun, RunState
from daemon.act.store import StateStore
p = {paths!r}
s = StateStore(p["db"])
steps = ({{"name": "s0", "uses": "runner_quick_steps:record", "params": {{"log": p["log"]}}}},)
s.create_run(ActionRun(id="r1", model="m", pipeline="p", source="manual", mode="auto",
                       state=RunState.QUEUED, steps=steps), actor="test")
Runner(s, p["runs"], worker_env={{"PYTHONPATH": p["tests"]}}).execute("r1")
assert s.get_run("r1").state is RunState.SUCCEEDED, s.get_run("r1")
"""
    loaded = _modules_after(code)
    assert "daemon.act.runner" in loaded and "fastapi" in loaded
    assert "torch" not in loaded and "transformers" not in loaded
