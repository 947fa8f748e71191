"""Builders shared by the policy, store, runner, API and CLI tests: evaluations with chosen
breaches, a policy engine on a real SQLite file, a quick pipeline of test steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from daemon.act.config import ModelPolicy, PipelineConfig
from daemon.act.policy import PolicyEngine
from daemon.act.runs import ActionRun, RunState, run_id_for
from daemon.act.store import StateStore
from daemon.monitor.evaluation import Evaluation
from detectors.result import DetectorResult, Verdict

TESTS = Path(__file__).resolve().parent


class Clock:
    """A clock the test moves by hand (cooldowns, daily caps)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def result(key: str, breached: bool, statistic: float = 0.5, n: int = 500,
           verdict: Verdict | None = None) -> DetectorResult:
    """``key`` is detector.metric or detector.metric[column]."""
    head, _, column = key.partition("[")
    detector, _, metric = head.partition(".")
    return DetectorResult(
        detector=detector, metric=metric, statistic=statistic, threshold=0.3,
        direction="above", verdict=verdict or (Verdict.BREACH if breached else Verdict.OK),
        n_reference=n, n_current=n, column=column.rstrip("]") or None,
    )


def evaluation(model: str, offset: int, breached: dict[str, bool], version: str = "v1",
               n: int = 500) -> Evaluation:
    return Evaluation(model=model, model_version=version, ts=1_800_000_000.0 + offset,
                      results=tuple(result(k, b, n=n) for k, b in breached.items()),
                      window_end_offset=offset)


def quick_pipeline(log: Path, n_steps: int = 2, **params: Any) -> PipelineConfig:
    return PipelineConfig.model_validate({
        "backoff": 0.05, "max_backoff": 0.2,
        "steps": [{"name": f"s{i}", "uses": "runner_quick_steps:record",
                   "params": {"log": str(log), **params}} for i in range(n_steps)],
    })


def engine(store: StateStore, log: Path, **policy: Any) -> PolicyEngine:
    settings = {"trigger": {"key": "drift.*"}, "pipeline": "quick", **policy}
    return PolicyEngine(store, {"m": ModelPolicy.model_validate(settings)},
                        {"quick": quick_pipeline(log)})


def queued_run(store: StateStore, model: str, steps: tuple[dict[str, Any], ...],
               trigger: str = "t", state: RunState = RunState.QUEUED) -> str:
    run_id = run_id_for(model, "p", [trigger])
    assert store.create_run(ActionRun(id=run_id, model=model, pipeline="p", source="manual",
                                      mode="auto", state=state, steps=steps), actor="test")
    return run_id


def quick_steps(log: Path, n: int = 1, **params: Any) -> tuple[dict[str, Any], ...]:
    return tuple({"name": f"s{i}", "uses": "runner_quick_steps:record", "max_attempts": 3,
                  "backoff": 0.05, "max_backoff": 0.2, "timeout": 30,
                  "params": {"log": str(log), **params}} for i in range(n))
