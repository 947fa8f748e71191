"""Runs one scenario through the embedded stack and watches the loop close.

The observer reads what an on-call engineer would: the daemon's API (evaluations, runs, audit),
what each replica serves, and the simulator's ground truth. From that it times detection and
recovery and splits accuracy into before the shift, during it, and after the new version serves
everywhere.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from harness.processes import TOPIC, Stack


@dataclass
class Moment:
    t_s: float  # seconds since the simulator started
    kind: str  # shift | breach | run | step | canary | promoted | rolled_back | recovered
    text: str


@dataclass
class LoopState:
    """Everything observed so far; the live view and the report read it."""

    started: float = field(default_factory=time.monotonic)
    shift_at_s: float | None = None
    moments: list[Moment] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    served: list[int | None] = field(default_factory=list)
    served_history: list[tuple[float, list[int | None]]] = field(default_factory=list)
    simulator: Any = None  # the newest SimulatorSnapshot
    detect_s: float | None = None
    recover_s: float | None = None
    first_version: int | None = None

    def now_s(self) -> float:
        return time.monotonic() - self.started

    def done_after_recovery(self, settle_s: float, after_recovery_s: float | None) -> bool:
        """Recovered, settled, and ``after_recovery_s`` more seconds of traffic seen."""
        return (after_recovery_s is not None and self.recover_s is not None
                and self.shift_at_s is not None and self.now_s()
                >= self.shift_at_s + self.recover_s + settle_s + after_recovery_s)

    def mark(self, kind: str, text: str) -> None:
        self.moments.append(Moment(round(self.now_s(), 1), kind, text))


@dataclass
class LoopResult:
    state: LoopState
    pre: float | None
    during: float | None
    post: float | None
    runs_created: int

    @property
    def detect_s(self) -> float | None:
        return self.state.detect_s

    @property
    def recover_s(self) -> float | None:
        return self.state.recover_s


class Observer:
    def __init__(self, stack: Stack, state: LoopState) -> None:
        self.stack = stack
        self.state = state
        self._seen_eval: set[str] = set()
        self._run_steps: dict[str, int] = {}
        self._run_states: dict[str, str] = {}

    def poll(self) -> None:
        state = self.state
        with contextlib.suppress(httpx.HTTPError):
            self._evaluations()
        with contextlib.suppress(httpx.HTTPError):
            self._runs()
        served = self.stack.served_versions()
        state.served = served
        state.served_history.append((state.now_s(), served))
        if state.first_version is None and served and served[0] is not None:
            state.first_version = served[0]
        new = [v for v in served if v is not None and v != state.first_version]
        if (state.recover_s is None and state.shift_at_s is not None and len(new) == len(served)
                and len(set(new)) == 1):
            state.recover_s = state.now_s() - state.shift_at_s
            state.mark("recovered", f"version {new[0]} serves on every replica")

    def _evaluations(self) -> None:
        state = self.state
        body = self.stack.api(f"/evaluations?model={self.stack.settings.model}&limit=20")
        for evaluation in reversed(body.get("evaluations", [])):
            if evaluation["id"] in self._seen_eval:
                continue
            self._seen_eval.add(evaluation["id"])
            with contextlib.suppress(httpx.HTTPError):
                evaluation = self.stack.api(f"/evaluations/{evaluation['id']}")
            evaluation["seen_s"] = round(state.now_s(), 1)
            state.evaluations.append(evaluation)
            if (evaluation["breached"] and state.detect_s is None
                    and state.shift_at_s is not None and state.now_s() >= state.shift_at_s):
                state.detect_s = state.now_s() - state.shift_at_s
                keys = ", ".join(b["key"] for b in evaluation["breaches"][:3])
                state.mark("breach", f"v{evaluation['model_version']} breached: {keys}")

    def _runs(self) -> None:
        state = self.state
        for run in self.stack.api(f"/runs?model={self.stack.settings.model}").get("runs", []):
            rid = run["id"]
            if rid not in state.runs:
                state.mark("run", f"run {rid} created ({run['pipeline']}, {run['mode']})")
            state.runs[rid] = run
            done = run.get("step", 0)
            if done != self._run_steps.get(rid, 0) or run["state"] != self._run_states.get(rid):
                detail = self.stack.api(f"/runs/{rid}")
                for record in detail.get("step_records", [])[self._run_steps.get(rid, 0):]:
                    evidence = record.get("evidence", {})
                    state.mark("step", f"{record['name']} done{_brief(record['name'], evidence)}")
                self._run_steps[rid] = done
                if run["state"] != self._run_states.get(rid):
                    self._run_states[rid] = run["state"]
                    if run["state"] in ("succeeded", "failed", "rolled_back", "rejected"):
                        state.mark(run["state"] if run["state"] != "succeeded" else "promoted",
                                   f"run {rid} {run['state']}"
                                   + (f": {run['error']}" if run.get("error") else ""))


def _brief(step: str, evidence: dict[str, Any]) -> str:
    keys = {"fine_tune": ("final_loss", "train_rows"), "evaluate": ("candidate", "champion"),
            "quantize": ("precision", "accuracy_int8"), "deploy": ("version", "outcome"),
            "export_onnx": ("max_abs_diff",)}.get(step, ())
    parts = [f"{k}={_fmt(evidence[k])}" for k in keys if k in evidence]
    return f" ({', '.join(parts)})" if parts else ""


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def accuracy_between(snapshot: Any, start_s: float, end_s: float | None) -> float | None:
    """Ground-truth accuracy of answers in [start_s, end_s) of simulator time."""
    answered = correct = 0
    for point in snapshot.timeline:
        if point.t_s >= start_s and (end_s is None or point.t_s < end_s):
            answered += point.answered
            correct += point.correct
    return correct / answered if answered else None


def run_scenario(stack: Stack, scenario: Any, on_tick: Callable[[LoopState], None] | None = None,
                 poll_s: float = 1.0, settle_s: float = 10.0,
                 after_recovery_s: float | None = None,
                 interrupt_stop_s: float = 3.0) -> LoopResult:
    """Drive ``scenario`` through the replicas until it ends, or until ``after_recovery_s``
    past the recovery (the post-recovery accuracy needs only that much traffic). On Ctrl-C the
    simulator is stopped within ``interrupt_stop_s`` and the interrupt goes on up."""
    from simulator.drivers import ReplicaConfig
    from simulator.runner import Simulator

    assert stack.broker is not None
    driver = ReplicaConfig(urls=stack.replica_urls, kafka=stack.broker.bootstrap, topic=TOPIC,
                           concurrency=8)
    simulator = Simulator(scenario, driver, bucket_s=2.0)
    state = LoopState()
    if scenario.kind != "stationary":
        state.shift_at_s = scenario.shift_at_s
    observer = Observer(stack, state)
    shift_marked = False
    simulator.start()
    state.started = time.monotonic()
    try:
        while not simulator.wait(poll_s):
            if state.shift_at_s is not None and not shift_marked and \
                    state.now_s() >= state.shift_at_s:
                shift_marked = True
                state.mark("shift", f"traffic shifts: {scenario.kind} to "
                                    f"{scenario.shift_domain}")
            observer.poll()
            state.simulator = snapshot = simulator.snapshot()
            if snapshot.started_at is not None and snapshot.started_monotonic is not None:
                # Scenario time 0 is when the simulator began sending, not when it was started.
                state.started = snapshot.started_monotonic
            if on_tick is not None:
                on_tick(state)
            if state.done_after_recovery(settle_s, after_recovery_s):
                simulator.stop()
    except KeyboardInterrupt:
        # The simulator stops first, while the broker and the replicas still run: its
        # requests in flight finish and its producer flushes in well under a second.
        stack.note("interrupted: stopping the simulator")
        stopping = time.monotonic()
        simulator.stop(timeout_s=interrupt_stop_s)
        stack.note(f"simulator {'stopped' if simulator.done else 'NOT stopped'} in "
                   f"{time.monotonic() - stopping:.2f}s")
        raise
    observer.poll()
    state.simulator = snapshot = simulator.snapshot()
    if on_tick is not None:
        on_tick(state)
    shift = state.shift_at_s
    recovered = None if state.recover_s is None or shift is None else shift + state.recover_s
    pre = accuracy_between(snapshot, 0.0, shift)
    during = None if shift is None else accuracy_between(snapshot, shift, recovered)
    post = None if recovered is None else accuracy_between(snapshot, recovered + settle_s, None)
    return LoopResult(state, pre, during, post, len(state.runs))
