"""One attempt of a step, in a fresh worker process (``python -m daemon.act.worker``).

The worker's only input is its spec file (actions.contract.WorkerSpec, written 0600 because it
may carry the API token for a canary's judge, and removed when the attempt ends); none of the
daemon's LIFEGUARD_* variables reach its environment. A worker that overruns the step's
timeout, or whose run is stopped or its lease lost, is killed with everything it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actions.contract import StepContext, WorkerSettings, WorkerSpec
from actions.errors import StepError
from actions.steps import STEPS, check_params
from daemon.act.leases import LeaseKeeper
from daemon.act.runs import ActionRun
from daemon.act.store import StateStore
from lifeguard.files import atomic_write

_ROOT = Path(__file__).resolve().parents[2]  # so workers import this very checkout


@dataclass(frozen=True, slots=True)
class Attempt:
    """How one attempt ended, and what its worker reported (its result file, or why none)."""

    kind: str  # ok | permanent | retryable | crashed | timeout | stopped
    result: dict[str, Any]


def result_files(work_dir: Path, index: int) -> list[Path]:
    """The result files every attempt of step ``index`` left in its run's folder, in order."""
    return sorted(work_dir.glob(f".step-{index:02d}-attempt-*.result.json"))


class WorkerLauncher:
    """Runs attempts of a run's steps, each in its own worker process."""

    def __init__(self, store: StateStore, work_root: Path, settings: WorkerSettings,
                 worker_env: Mapping[str, str], python: str, leases: LeaseKeeper,
                 stop: threading.Event) -> None:
        self.store = store
        self.work_root = work_root
        self.settings = settings
        self.worker_env = dict(worker_env)
        self.python = python
        self.leases = leases
        self.stop = stop  # set: kill the worker in flight (the daemon is stopping)

    def attempt(self, run: ActionRun, index: int, attempt: int) -> Attempt:
        step = run.steps[index]
        work_dir = self.work_root / run.id
        work_dir.mkdir(parents=True, exist_ok=True)
        stem = work_dir / f".step-{index:02d}-attempt-{attempt}"
        result_path = stem.with_suffix(".result.json")
        result_path.unlink(missing_ok=True)
        try:
            spec = self._spec(run, index, attempt, result_path)
        except (StepError, ValueError) as exc:
            return Attempt("permanent", {"type": type(exc).__name__, "message": str(exc)})
        spec_path = stem.with_suffix(".spec.json")
        atomic_write(spec_path, spec.model_dump_json(), mode=0o600)
        try:
            return self._spawn(run.id, step, spec_path, result_path, stem)
        finally:
            spec_path.unlink(missing_ok=True)  # it may hold the token: not kept past the attempt

    def _spec(self, run: ActionRun, index: int, attempt: int, result_path: Path) -> WorkerSpec:
        """The worker's only input; raises StepError or ValueError for unusable params."""
        artifacts: dict[str, Path] = {}
        sums: dict[str, str] = {}
        for record in self.store.steps(run.id):
            for name, art in record.artifacts.items():
                artifacts[name], sums[name] = Path(art["path"]), art["sha256"]
        step = run.steps[index]
        params = step.get("params", {})
        if step.get("uses") is None and step["name"] in STEPS:
            check_params(step["name"], params)  # a built-in step refuses a param it lacks
        ctx = StepContext.for_step(
            run_id=run.id, model=run.model, step=step["name"], step_index=index,
            attempt=attempt, work_dir=self.work_root / run.id, params=params,
            artifacts=artifacts, settings=self._settings_for(run.id),
            snapshot=Path(run.snapshot_path).resolve() if run.snapshot_path else None,
            champion_dir=Path(run.champion_path).resolve() if run.champion_path else None)
        return WorkerSpec(ref=step.get("uses") or step["name"], context=ctx, verify=sums,
                          parent_pid=os.getpid(), result_path=result_path)

    def _settings_for(self, run_id: str) -> WorkerSettings:
        """The deploy target carries the run's fence: its every rollout write checks it."""
        fence = self.leases.fence(run_id)
        if self.settings.deploy is None or fence is None:
            return self.settings
        deploy = self.settings.deploy.model_copy(update={"fence": fence})
        return self.settings.model_copy(update={"deploy": deploy})

    def _spawn(self, run_id: str, step: Mapping[str, Any], spec_path: Path, result_path: Path,
               stem: Path) -> Attempt:
        # The spec is the worker's only input: none of the daemon's own LIFEGUARD_* variables
        # (its API token among them) leak into a step's environment.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("LIFEGUARD_")}
        env = {**inherited, **self.worker_env}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_ROOT), self.worker_env.get("PYTHONPATH"),
                        os.environ.get("PYTHONPATH"))
            if p
        )
        timeout = float(step.get("timeout", 3600.0))
        log_path = stem.with_suffix(".log")
        with open(log_path, "ab") as logf:
            proc = subprocess.Popen(
                [self.python, "-m", "daemon.act.worker", str(spec_path)],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=env,
                cwd=stem.parent, start_new_session=True,
            )
            deadline = time.monotonic() + timeout
            while proc.poll() is None:
                if self.stop.is_set() or self.leases.lost(run_id):
                    _kill(proc)
                    return Attempt("stopped", {})
                if time.monotonic() > deadline:
                    _kill(proc)
                    return Attempt("timeout", _with_log(
                        {"message": f"exceeded {timeout:.0f}s timeout"}, log_path))
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.05)
        if not result_path.exists():
            return Attempt("crashed", _with_log(
                {"message": f"worker exited {proc.returncode} without a result"}, log_path))
        result = json.loads(result_path.read_text())
        if result["ok"]:
            return Attempt("ok", result)
        return Attempt(result["kind"], _with_log(result, log_path))


def _with_log(result: dict[str, Any], log_path: Path, tail_bytes: int = 2000) -> dict[str, Any]:
    """Point the audit at the worker's log, with its tail (the OOM or traceback at 3 a.m.)."""
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, log_path.stat().st_size - tail_bytes))
            tail = f.read().decode(errors="replace")
    except OSError:
        tail = ""
    evidence = {**result.get("evidence", {}), "log": str(log_path), "log_tail": tail}
    return {**result, "evidence": evidence}


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill the worker and anything it started (its own session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
