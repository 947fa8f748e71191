"""Trigger decisions: evaluations and alerts in, "start run X" (or why not) out.

The decision functions are pure (no store, no clock); ``PolicyEngine`` feeds them from the
state store and turns a firing decision into a durable run whose id comes from the trigger, so
a replayed window or a resent alert finds its run already there and starts nothing.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from daemon.act.config import Condition, Mode, ModelPolicy, PipelineConfig
from daemon.act.runs import ACTIVE, ActionRun, RunState, run_id_for
from daemon.act.store import StateStore
from daemon.monitor.evaluation import Evaluation
from detectors.result import DetectorResult, Verdict

DAY_S = 86400.0
PathProvider = Callable[[str], Path | None]


@functools.lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    # Only * and ? are wildcards: keys contain [column], which fnmatch would read as a set.
    body = "".join(
        ".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern
    )
    return re.compile(body + r"\Z")


def key_matches(pattern: str, key: str) -> bool:
    return _glob(pattern).match(key) is not None


def _counts(result: DetectorResult, cond: Condition, min_samples: int) -> bool:
    if result.verdict is Verdict.INSUFFICIENT or result.n_current < min_samples:
        return False
    if cond.above is not None:
        return result.statistic is not None and result.statistic > cond.above
    if cond.below is not None:
        return result.statistic is not None and result.statistic < cond.below
    return result.verdict is Verdict.BREACH


def evaluate_condition(
    cond: Condition, results: Sequence[DetectorResult], min_samples: int = 0
) -> tuple[bool, tuple[str, ...]]:
    """Whether ``cond`` holds on one evaluation's results, and the keys that made it hold."""
    if cond.key is not None:
        keys = tuple(r.key for r in results
                     if key_matches(cond.key, r.key) and _counts(r, cond, min_samples))
        return len(keys) >= cond.min_matches, keys
    children = [evaluate_condition(c, results, min_samples) for c in (cond.all or cond.any or [])]
    held = all(h for h, _ in children) if cond.all is not None else any(h for h, _ in children)
    keys = tuple(k for h, ks in children if h for k in ks)
    return held, keys if held else ()


@dataclass(frozen=True, slots=True)
class RunHistory:
    """What the gates need to know about a model's earlier runs."""

    active_run_id: str | None = None
    last_created_at: float | None = None
    created_last_day: int = 0
    paused: bool = False


@dataclass(frozen=True, slots=True)
class TriggerDecision:
    model: str
    fire: bool
    reason: str
    pipeline: str | None = None
    run_id: str | None = None
    mode: Mode | None = None
    source: str = "evaluation"
    evidence: dict[str, Any] = field(default_factory=dict)


def gate(policy: ModelPolicy, history: RunHistory, now: float) -> str | None:
    """Why a trigger that held may not start a run now, or None when it may."""
    if history.paused:
        return "model is paused"
    if history.active_run_id is not None:
        return f"run {history.active_run_id} is still active"
    if history.last_created_at is not None and now - history.last_created_at < policy.cooldown:
        left = policy.cooldown - (now - history.last_created_at)
        return f"cooldown: {left:.0f}s left"
    if history.created_last_day >= policy.max_runs_per_day:
        return f"daily cap reached ({history.created_last_day}/{policy.max_runs_per_day} in 24h)"
    return None


def decide_on_evaluations(
    policy: ModelPolicy, recent: Sequence[Evaluation], history: RunHistory, now: float
) -> TriggerDecision:
    """``recent`` is the model's evaluations, newest first. The trigger must hold on the
    ``hold`` newest evaluations of the newest one's version (versions are not mixed, so a
    canary's numbers never extend the champion's streak)."""
    if not recent:
        return TriggerDecision(model="", fire=False, reason="no evaluations")
    model = recent[0].model
    if policy.trigger is None:
        return TriggerDecision(model=model, fire=False, reason="no trigger configured")
    version = recent[0].model_version
    window = [e for e in recent if e.model_version == version][: policy.hold]
    held_keys: list[tuple[str, ...]] = []
    for ev in window:
        held, keys = evaluate_condition(policy.trigger, ev.results, policy.min_samples)
        if not held:
            break
        held_keys.append(keys)
    if len(held_keys) < policy.hold:
        return TriggerDecision(
            model=model, fire=False,
            reason=f"trigger held {len(held_keys)} of {policy.hold} evaluations",
        )
    ids = [e.id for e in window]
    evidence = {"evaluation_ids": ids, "model_version": version,
                "breached_keys": list(held_keys[0])}
    run_id = run_id_for(model, policy.pipeline, ids)
    blocked = gate(policy, history, now)
    return TriggerDecision(
        model=model, fire=blocked is None, reason=blocked or "trigger held",
        pipeline=policy.pipeline, run_id=run_id, mode=policy.mode, evidence=evidence,
    )


def decide_on_alert(
    model: str, pipeline: str, fingerprint: str, starts_at: str, policy: ModelPolicy,
    history: RunHistory, now: float, evidence: Mapping[str, Any],
) -> TriggerDecision:
    run_id = run_id_for(model, pipeline, [f"alert:{fingerprint}@{starts_at}"])
    if not policy.alerts:
        return TriggerDecision(model=model, fire=False, reason="alerts disabled for this model",
                               source="alert")
    blocked = gate(policy, history, now)
    return TriggerDecision(
        model=model, fire=blocked is None, reason=blocked or "alert firing", pipeline=pipeline,
        run_id=run_id, mode=policy.mode, source="alert", evidence=dict(evidence),
    )


_INITIAL_STATE = {Mode.AUTO: RunState.QUEUED, Mode.APPROVE: RunState.PENDING_APPROVAL,
                  Mode.DRY_RUN: RunState.DRY_RUN}


class PolicyEngine:
    """Glue between the store and the pure decisions; creates runs for decisions that fire.

    The snapshot of labelled data and the champion's path are captured when the run is created
    (not when it executes), so a run resumed days later trains on what triggered it.
    """

    def __init__(
        self,
        store: StateStore,
        policies: Mapping[str, ModelPolicy],
        pipelines: Mapping[str, PipelineConfig],
        snapshot_provider: PathProvider | None = None,
        champion_provider: PathProvider | None = None,
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        """``owns(model)``: whether this instance holds the model's windows; a run triggered
        here for a model another instance owns is created with its snapshot deferred to the
        owner, who takes it before the first step."""
        self.store = store
        self._owns = owns or (lambda model: True)
        self.policies = dict(policies)
        self.pipelines = dict(pipelines)
        self._snapshot = snapshot_provider
        self._champion = champion_provider
        # Gates + create must not interleave across threads, nor across instances sharing the
        # store: cooldowns and daily caps hold for the group, not per instance.
        self._lock = threading.Lock()
        # Last suppression cause per model: a breach held through an hour-long run would
        # otherwise write the same "run X is still active" line on every evaluation.
        self._suppressed: dict[str, str] = {}

    def history(self, model: str, now: float) -> RunHistory:
        active = self.store.list_runs(model=model, states=ACTIVE, limit=1)
        last_day = self.store.runs_created_since(model, now - DAY_S)
        last = self.store.list_runs(model=model, limit=1)
        return RunHistory(
            active_run_id=active[0].id if active else None,
            last_created_at=last[0].created_at if last else None,
            created_last_day=len(last_day),
            paused=model in self.store.paused_models(),
        )

    def on_evaluation(self, evaluation: Evaluation) -> TriggerDecision:
        """Store the evaluation; decide only if it is new (a replay decides nothing)."""
        if not self.store.add_evaluation(evaluation):
            return TriggerDecision(model=evaluation.model, fire=False,
                                   reason="evaluation already seen (replay)")
        policy = self.policies.get(evaluation.model)
        if policy is None:
            return TriggerDecision(model=evaluation.model, fire=False, reason="no policy")
        with self._lock, self.store.exclusive(f"policy:{evaluation.model}"):
            now = self.store.now()
            recent = self.store.list_evaluations(model=evaluation.model,
                                                 model_version=evaluation.model_version,
                                                 limit=policy.hold)
            decision = decide_on_evaluations(policy, recent, self.history(evaluation.model, now),
                                             now)
            return self._act(decision)

    def on_alert(self, model: str, pipeline: str | None, fingerprint: str, starts_at: str,
                 evidence: Mapping[str, Any]) -> TriggerDecision:
        """A new firing alert (the caller already dropped resends and resolved alerts)."""
        policy = self.policies.get(model)
        if policy is None:
            return self._ignored(model, f"no policy for model {model!r}", evidence)
        pipeline = pipeline or policy.pipeline
        if pipeline not in self.pipelines:
            return self._ignored(model, f"unknown pipeline {pipeline!r}", evidence)
        if pipeline not in policy.own_pipelines():
            # The label is chosen by whoever wrote the alert rule: it must not reach another
            # model's pipeline (or any pipeline the model's policy does not list).
            return self._ignored(model, f"pipeline {pipeline!r} is not one of model {model!r}'s "
                                 f"pipelines ({', '.join(policy.own_pipelines())})", evidence)
        with self._lock, self.store.exclusive(f"policy:{model}"):
            now = self.store.now()
            decision = decide_on_alert(model, pipeline, fingerprint, starts_at, policy,
                                       self.history(model, now), now, evidence)
            return self._act(decision)

    def _ignored(self, model: str, reason: str, evidence: Mapping[str, Any]) -> TriggerDecision:
        self.store.audit("trigger.ignored", "policy", model, None, {"reason": reason, **evidence})
        return TriggerDecision(model=model, fire=False, reason=reason, source="alert")

    def _act(self, decision: TriggerDecision) -> TriggerDecision:
        if decision.run_id is None:  # the trigger did not hold: nothing worth an audit line
            self._suppressed.pop(decision.model, None)
            return decision
        if self.store.get_run(decision.run_id) is not None:
            return replace(decision, fire=False, reason="run for this trigger already exists")
        if not decision.fire:
            cause = decision.reason.split(":")[0].split(" (")[0]
            if self._suppressed.get(decision.model) != cause:
                self._suppressed[decision.model] = cause
                self.store.audit("trigger.suppressed", "policy", decision.model,
                                 decision.run_id, {"reason": decision.reason,
                                                   "source": decision.source,
                                                   **decision.evidence})
            return decision
        self._suppressed.pop(decision.model, None)
        assert decision.pipeline is not None and decision.mode is not None
        pipeline = self.pipelines[decision.pipeline]
        steps = tuple({**s.model_dump(mode="json"), "backoff": pipeline.backoff,
                       "max_backoff": pipeline.max_backoff} for s in pipeline.steps)
        dry = decision.mode is Mode.DRY_RUN
        deferred = not dry and self._snapshot is not None and not self._owns(decision.model)
        snapshot = (None if dry or deferred or self._snapshot is None
                    else self._snapshot(decision.model))
        champion = None if dry or self._champion is None else self._champion(decision.model)
        evidence = {**decision.evidence, "reason": decision.reason,
                    "snapshot_path": str(snapshot) if snapshot else None,
                    "champion_path": str(champion) if champion else None,
                    **({"snapshot_deferred": True} if deferred else {})}
        run = ActionRun(
            id=decision.run_id, model=decision.model, pipeline=decision.pipeline,
            source=decision.source, mode=decision.mode.value, state=_INITIAL_STATE[decision.mode],
            steps=steps, evidence=evidence, snapshot_path=str(snapshot) if snapshot else None,
            champion_path=str(champion) if champion else None,
        )
        if not self.store.create_run(run, actor="policy"):
            return replace(decision, fire=False, reason="run for this trigger already exists")
        return decision
