"""The runner: executes queued action runs step by step, each step in a fresh worker process
(``daemon.act.worker``), and resumes interrupted runs from their last recorded step on start-up.

One run per model at a time, at most ``max_concurrent`` runs in all. A step's completion and
its outputs are recorded in one transaction before the next step starts, so after a kill -9
anywhere a restart re-runs at most the step that was in flight (steps are idempotent). A step
that overruns its timeout has its worker killed and fails the run; retryable errors and worker
crashes are retried with exponential backoff up to the step's ``max_attempts``.

A worker's only input is its spec file (actions.contract.WorkerSpec, written 0600 because it
may carry the API token for a canary's judge, and removed when the attempt ends); each step's
outcome, wall time and last training progress go to ``lifeguard_action_*`` on /metrics.

Several instances may share one store: a run executes under a renewed lease whose fencing token
every state change (and the deploy step's every rollout write) carries. A moved model stops its
run at the next step boundary; a lease taken over (after it lapsed) kills the worker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actions.contract import StepContext, WorkerSettings, WorkerSpec, content_sha256
from actions.errors import StepError
from actions.progress import ActionMetrics, Progress
from actions.steps import STEPS, check_params
from daemon.act.leases import LeaseKeeper
from daemon.act.runs import ActionRun, RunState, StepRecord
from daemon.act.store import Fence, StateStore
from lifeguard.files import atomic_write

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

_ROOT = Path(__file__).resolve().parents[2]  # so workers import this very checkout


@dataclass(frozen=True, slots=True)
class _Attempt:
    kind: str  # ok | permanent | retryable | crashed | timeout | stopped
    result: dict[str, Any]


class Runner:
    def __init__(
        self,
        store: StateStore,
        work_root: Path,
        max_concurrent: int = 1,
        poll_interval: float = 1.0,
        settings: WorkerSettings | None = None,
        worker_env: Mapping[str, str] | None = None,
        python: str = sys.executable,
        owns: Callable[[str], bool] | None = None,
        registry: CollectorRegistry | None = None,
        owner: str | None = None,
        lease_ttl_s: float = 30.0,
        take_over_on_start: bool | None = None,
        prepare: Callable[[ActionRun, Fence], None] | None = None,
        after_timeout: Callable[[ActionRun, str, Fence | None], None] | None = None,
    ) -> None:
        """``settings`` go to every step in its spec file; ``worker_env`` is only the worker
        process's environment (PYTHONPATH, library switches), never lifeguard's settings.
        ``owns(model)`` says whether this instance acts for a model (partition ownership when
        several daemons share one store); default: every model. Step metrics go on
        ``registry`` when given. ``owner`` names this instance in run leases (default
        host-pid), which lapse ``lease_ttl_s`` after their last renewal. ``take_over_on_start``
        (default: a SQLite store, one instance's alone): runs a previous process leased are
        taken over at once. ``prepare`` gives a run created on another instance what it lacks
        (its snapshot) before the first step. ``after_timeout(run, step, fence)`` runs when a
        step's worker was killed at its timeout (a deploy puts the fleet back on one
        version)."""
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0, got {poll_interval}")
        self.store = store
        # absolute: a worker runs in its run's folder, and reads every path from its spec
        self.work_root = Path(work_root).resolve()
        self.max_concurrent = max_concurrent
        self.poll_interval = poll_interval
        self.settings = settings or WorkerSettings()
        self._env = dict(worker_env or {})
        self.metrics = ActionMetrics(registry) if registry is not None else None
        self._python = python
        self._owns = owns or (lambda model: True)
        self.leases = LeaseKeeper(store, owner or f"{socket.gethostname()}-{os.getpid()}",
                                  lease_ttl_s)
        self._take_over = not store.shared if take_over_on_start is None else take_over_on_start
        self._prepare = prepare
        self._after_timeout = after_timeout
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._active: dict[str, threading.Thread] = {}  # run id -> its thread
        self._model_of: dict[str, str] = {}  # run id -> model, for one run per model
        self._loop: threading.Thread | None = None

    # -- lifetime --------------------------------------------------------------------------

    def start(self) -> Runner:
        """Resume interrupted runs, then schedule queued ones in a background thread."""
        for run in self.store.list_runs(states=[RunState.RUNNING], limit=10_000):
            if self._take_over:  # its previous holder was this instance, before a restart
                self.store.acquire_lease(run.id, self.leases.owner, self.leases.ttl_s, force=True)
            if not self._owns(run.model):  # (a daemon owns nothing before it joins its group)
                continue
            self.store.audit("run.resuming", "runner", run.model, run.id,
                             {"next_step": run.next_step, "n_steps": run.n_steps})
        self._loop = threading.Thread(target=self._schedule_forever, name="lifeguard-runner",
                                      daemon=True)
        self._loop.start()
        self.leases.start(self._stop)
        return self

    def wake(self) -> None:
        """Look for work now (after an approval) instead of at the next poll."""
        self._wake.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Kill workers in flight; their runs stay ``running`` and resume on the next start."""
        self._stop.set()
        self._wake.set()
        if self._loop is not None:
            self._loop.join(timeout_s)
        for thread in list(self._active.values()):
            thread.join(timeout_s)
        self.leases.join(timeout_s)

    @property
    def active_runs(self) -> list[str]:
        with self._lock:
            return list(self._active)

    def _schedule_forever(self) -> None:
        while not self._stop.is_set():
            try:
                self.schedule()
            except Exception:  # a store hiccup must not end scheduling
                log.exception("runner scheduling failed")
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    def schedule(self) -> list[str]:
        """Start threads for runnable runs within the limits; returns the run ids started."""
        paused = self.store.paused_models()
        # Interrupted (running) runs first, then queued ones, oldest first.
        candidates = sorted(
            self.store.list_runs(states=[RunState.RUNNING, RunState.QUEUED], limit=10_000),
            key=lambda r: (r.state is not RunState.RUNNING, r.created_at, r.id),
        )
        started = []
        with self._lock:
            self._active = {k: t for k, t in self._active.items() if t.is_alive()}
            self._model_of = {k: m for k, m in self._model_of.items() if k in self._active}
            busy_models = {self._model_of[k] for k in self._active}
            for run in candidates:
                if len(self._active) >= self.max_concurrent:
                    break
                if run.id in self._active or run.model in busy_models or run.model in paused:
                    continue
                if not self._owns(run.model):
                    continue
                thread = threading.Thread(target=self._execute_safely, args=(run.id,),
                                          name=f"run-{run.id}", daemon=True)
                self._active[run.id] = thread
                self._model_of[run.id] = run.model
                busy_models.add(run.model)
                thread.start()
                started.append(run.id)
        return started

    # -- one run ---------------------------------------------------------------------------

    def _execute_safely(self, run_id: str) -> None:
        try:
            self.execute(run_id)
        except Exception:  # the store failed before the run was leased: the next poll retries
            log.exception("run %s could not be started", run_id)

    def execute(self, run_id: str) -> None:
        """Run ``run_id`` to its end under a lease; returns at once when another instance
        holds the run, and at a step boundary when this one no longer owns the model."""
        run = self.store.get_run(run_id)
        if run is not None and run.state in (RunState.QUEUED, RunState.RUNNING):
            self.leases.run_under_lease(run, self._execute)

    def _execute(self, run_id: str, fence: Fence) -> None:
        run = self.store.get_run(run_id)
        if run is None:
            return
        if run.state is RunState.QUEUED and not self.store.transition(
            run_id, RunState.RUNNING, "runner", [RunState.QUEUED], {"n_steps": run.n_steps},
            fence=fence,
        ):
            return
        prepared = False
        while not self._stop.is_set():
            run = self.store.get_run(run_id)
            if run is None or run.state is not RunState.RUNNING:
                return
            if (self._prepare is not None and not prepared and run.next_step == 0
                    and run.snapshot_path is None and run.evidence.get("snapshot_deferred")):
                prepared = True
                self._prepare(run, fence)
                continue
            done = self.store.steps(run_id)[-1:]
            if done and done[0].status == RunState.ROLLED_BACK.value:
                # Checked here, not only after the step: a kill -9 between recording the
                # step and ending the run must not let the pipeline go on after a rollback.
                self.store.transition(run_id, RunState.ROLLED_BACK, "runner",
                                      [RunState.RUNNING], {"step": done[0].name,
                                                           **done[0].evidence}, fence=fence)
                return
            if run.next_step >= run.n_steps:
                self.store.transition(run_id, RunState.SUCCEEDED, "runner", [RunState.RUNNING],
                                      {"steps": run.n_steps}, fence=fence)
                return
            if not self._owns(run.model):
                # The model moved to another instance: stop here, at a step boundary; the
                # lease is released on the way out so the new owner need not wait it out.
                self.store.audit("run.handed_over", fence.owner, run.model, run_id,
                                 {"next_step": run.next_step, "token": fence.token})
                return
            if run.model in self.store.paused_models():
                self._stop.wait(self.poll_interval)  # paused between steps: hold here
                continue
            if not self._run_step(run):
                return

    def _run_step(self, run: ActionRun) -> bool:
        """Run step ``run.next_step`` with retries; True when the run should go on."""
        index = run.next_step
        step = run.steps[index]
        recovered = self._finished_before(run, index)
        if recovered is not None:  # the worker finished, the daemon died before recording it
            return self._record(run, index, recovered, attempt=0)
        max_attempts = int(step.get("max_attempts", 1))
        for attempt in range(1, max_attempts + 1):
            outcome = self._attempt(run, index, attempt)
            result = outcome.result
            if outcome.kind == "stopped":
                return False
            self._observe(step["name"], outcome)
            if outcome.kind == "ok":
                return self._record(run, index, result, attempt)
            error = f"step {index} ({step['name']}) {outcome.kind}: {result.get('message', '')}"
            evidence = {"step": step["name"], "attempt": attempt, "kind": outcome.kind,
                        "error_type": result.get("type"), **result.get("evidence", {})}
            if outcome.kind in ("retryable", "crashed") and attempt < max_attempts:
                delay = result.get("delay_s")
                if delay is None:
                    backoff = float(step.get("backoff", 5.0)) * 2 ** (attempt - 1)
                    delay = min(backoff, float(step.get("max_backoff", 300.0)))
                self.store.audit("run.step_retry", "runner", run.model, run.id,
                                 {**evidence, "error": error, "retry_in_s": delay})
                if self._stop.wait(delay):
                    return False
                continue
            self.store.transition(run.id, RunState.FAILED, "runner", [RunState.RUNNING],
                                  evidence, error=error, fence=self.leases.fence(run.id))
            if outcome.kind == "timeout" and self._after_timeout is not None:
                self._clean_up_after_timeout(run, step["name"])
            return False
        return False

    def _clean_up_after_timeout(self, run: ActionRun, step: str) -> None:
        assert self._after_timeout is not None
        try:
            self._after_timeout(run, step, self.leases.fence(run.id))
        except Exception as exc:  # the run has failed already; say what is left to do
            log.exception("clean-up after %s of run %s timed out failed", step, run.id)
            self.store.audit("run.cleanup_failed", "runner", run.model, run.id,
                             {"step": step, "error": repr(exc)})

    def _record(self, run: ActionRun, index: int, result: dict[str, Any], attempt: int) -> bool:
        """Record a finished step (one transaction)."""
        step = run.steps[index]
        evidence = dict(result["evidence"])
        if attempt == 0:
            evidence["recovered_result"] = True
        record = StepRecord(index=index, name=step["name"], status=result["status"],
                            artifacts=result["artifacts"], evidence=evidence,
                            attempts=max(attempt, 1))
        self.store.complete_step(run.id, record, fence=self.leases.fence(run.id))
        return True  # the run loop ends a rolled-back run before the next step

    def _finished_before(self, run: ActionRun, index: int) -> dict[str, Any] | None:
        """A successful result a worker wrote before the daemon died, if its artifacts still
        match their sums: recording it saves re-running (say) an hour of fine-tuning."""
        work_dir = self.work_root / run.id
        for path in sorted(work_dir.glob(f".step-{index:02d}-attempt-*.result.json")):
            try:
                result = json.loads(path.read_text())
                if result.get("ok") and all(
                    content_sha256(Path(a["path"])) == a["sha256"]
                    for a in result["artifacts"].values()
                ):
                    return result
            except (OSError, ValueError, KeyError):
                continue  # unreadable or artifacts gone: run the step again
        return None

    def _observe(self, step: str, attempt: _Attempt) -> None:
        """Put what the worker reported about its step on the daemon's /metrics."""
        if self.metrics is None:
            return
        reported = attempt.result.get("metrics") or {}
        if reported.get("progress"):
            self.metrics.observe(Progress(**reported["progress"]))
        # no report: the worker crashed, timed out, or its params were refused before it ran
        outcome = reported.get("outcome") or {"permanent": "failed"}.get(attempt.kind,
                                                                           attempt.kind)
        self.metrics.finish(step, outcome, float(reported.get("seconds") or 0.0))

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

    def _attempt(self, run: ActionRun, index: int, attempt: int) -> _Attempt:
        step = run.steps[index]
        work_dir = self.work_root / run.id
        work_dir.mkdir(parents=True, exist_ok=True)
        stem = work_dir / f".step-{index:02d}-attempt-{attempt}"
        result_path = stem.with_suffix(".result.json")
        result_path.unlink(missing_ok=True)
        try:
            spec = self._spec(run, index, attempt, result_path)
        except (StepError, ValueError) as exc:
            return _Attempt("permanent", {"type": type(exc).__name__, "message": str(exc)})
        spec_path = stem.with_suffix(".spec.json")
        atomic_write(spec_path, spec.model_dump_json(), mode=0o600)
        try:
            return self._spawn(run.id, step, spec_path, result_path, stem)
        finally:
            spec_path.unlink(missing_ok=True)  # it may hold the token: not kept past the attempt

    def _spawn(self, run_id: str, step: Mapping[str, Any], spec_path: Path, result_path: Path,
               stem: Path) -> _Attempt:
        # The spec is the worker's only input: none of the daemon's own LIFEGUARD_* variables
        # (its API token among them) leak into a step's environment.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("LIFEGUARD_")}
        env = {**inherited, **self._env}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_ROOT), self._env.get("PYTHONPATH"), os.environ.get("PYTHONPATH"))
            if p
        )
        timeout = float(step.get("timeout", 3600.0))
        log_path = stem.with_suffix(".log")
        with open(log_path, "ab") as logf:
            proc = subprocess.Popen(
                [self._python, "-m", "daemon.act.worker", str(spec_path)],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=env,
                cwd=stem.parent, start_new_session=True,
            )
            deadline = time.monotonic() + timeout
            while proc.poll() is None:
                if self._stop.is_set() or self.leases.lost(run_id):
                    _kill(proc)
                    return _Attempt("stopped", {})
                if time.monotonic() > deadline:
                    _kill(proc)
                    return _Attempt("timeout", _with_log(
                        {"message": f"exceeded {timeout:.0f}s timeout"}, log_path))
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.05)
        if not result_path.exists():
            return _Attempt("crashed", _with_log(
                {"message": f"worker exited {proc.returncode} without a result"}, log_path))
        result = json.loads(result_path.read_text())
        if result["ok"]:
            return _Attempt("ok", result)
        return _Attempt(result["kind"], _with_log(result, log_path))


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
