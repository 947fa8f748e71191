"""The runner: schedules queued action runs and takes each through its steps, and resumes
interrupted runs from their last recorded step on start-up.

One run per model at a time, at most ``max_concurrent`` runs in all. Each step runs in a fresh
worker process (daemon.act.worker_launch), with retries and its timeout's clean-up
(daemon.act.step_execution); its completion and outputs are recorded in one transaction
before the next step starts (daemon.act.step_results), so after a kill -9 anywhere a restart
re-runs at most the step that was in flight (steps are idempotent). Each step's outcome, wall
time and last training progress go to ``lifeguard_action_*`` on /metrics.

Several instances may share one store: a run executes under a renewed lease whose fencing token
every state change (and the deploy step's every rollout write) carries. A moved model stops its
run at the next step boundary; a lease taken over (after it lapsed) kills the worker.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from actions.contract import WorkerSettings
from actions.progress import ActionMetrics
from daemon.act.leases import LeaseKeeper
from daemon.act.runs import ActionRun, RunState
from daemon.act.step_execution import AfterTimeout, StepExecutor
from daemon.act.step_results import StepResults
from daemon.act.store import Fence, StateStore
from daemon.act.worker_launch import WorkerLauncher

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)


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
        after_timeout: AfterTimeout | None = None,
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
        self.metrics = ActionMetrics(registry) if registry is not None else None
        self._owns = owns or (lambda model: True)
        self.leases = LeaseKeeper(store, owner or f"{socket.gethostname()}-{os.getpid()}",
                                  lease_ttl_s)
        self._take_over = not store.shared if take_over_on_start is None else take_over_on_start
        self._prepare = prepare
        self._stop = threading.Event()
        launcher = WorkerLauncher(store, self.work_root, self.settings, worker_env or {},
                                  python, self.leases, self._stop)
        results = StepResults(store, self.leases, self.work_root, self.metrics)
        self._steps = StepExecutor(store, self.leases, launcher, results, self._stop,
                                   after_timeout)
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
            if not self._steps.run_step(run):
                return
