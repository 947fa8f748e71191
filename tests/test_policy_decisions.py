"""Trigger decisions: K-held breaches start exactly one run; replays, cooldown, the daily cap,
pauses and active runs start none; conditions match keys by glob, bounds and sample sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
from policy_fixtures import Clock, engine, evaluation, result

from daemon.act.config import Condition
from daemon.act.policy import evaluate_condition, key_matches
from daemon.act.runs import RunState
from daemon.act.store import StateStore
from detectors.result import Verdict

BREACH = {"drift.distribution[text_length]": True, "latency.p95_ms": False}
CALM = {"drift.distribution[text_length]": False, "latency.p95_ms": False}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> StateStore:
    s = StateStore(tmp_path / "state.db", clock=clock)
    yield s
    s.close()


def test_glob_treats_brackets_literally_and_star_as_wildcard() -> None:
    assert key_matches("drift.*", "drift.distribution[text_length]")
    assert key_matches("drift.distribution[text_length]", "drift.distribution[text_length]")
    assert not key_matches("drift.distribution[text_length]", "drift.distribution[t]")
    assert key_matches("accuracy.accuracy?vs*", "accuracy.accuracy_vs_reference{en}")
    assert not key_matches("latency.*", "drift.distribution[latency]")


def test_condition_tree_all_any_min_matches_bounds_and_samples() -> None:
    results = [result("drift.d[a]", True), result("drift.d[b]", True),
               result("drift.d[c]", False, statistic=0.9),
               result("latency.p95_ms", False, statistic=300.0),
               result("accuracy.accuracy", True, n=20)]
    cond = Condition.model_validate
    assert evaluate_condition(cond({"key": "drift.*", "min_matches": 2}), results) == (
        True, ("drift.d[a]", "drift.d[b]"))
    assert not evaluate_condition(cond({"key": "drift.*", "min_matches": 3}), results)[0]
    # An explicit bound replaces the detector's verdict: c (0.9) counts, a and b (0.5) not.
    assert evaluate_condition(cond({"key": "drift.*", "above": 0.8}), results) == (
        True, ("drift.d[c]",))
    both = cond({"all": [{"key": "drift.*"}, {"key": "latency.p95_ms", "above": 250}]})
    assert evaluate_condition(both, results)[0]
    assert not evaluate_condition(
        cond({"all": [{"key": "drift.*"}, {"key": "latency.p95_ms", "above": 350}]}), results
    )[0]
    assert evaluate_condition(
        cond({"any": [{"key": "nothing.*"}, {"key": "accuracy.accuracy"}]}), results)[0]
    # Too few samples never breach, whatever the verdict.
    assert not evaluate_condition(cond({"key": "accuracy.accuracy"}), results, min_samples=100)[0]
    insufficient = [result("drift.d[a]", False, verdict=Verdict.INSUFFICIENT)]
    assert not evaluate_condition(cond({"key": "drift.*", "above": -1}), insufficient)[0]


def test_breach_held_for_k_evaluations_starts_exactly_one_run(store: StateStore,
                                                             tmp_path: Path) -> None:
    eng = engine(store, tmp_path / "log", hold=3, mode="auto")
    decisions = [eng.on_evaluation(evaluation("m", i, BREACH)) for i in range(6)]
    assert [d.fire for d in decisions] == [False, False, True, False, False, False]
    assert decisions[0].reason == "trigger held 1 of 3 evaluations"
    runs = store.list_runs(model="m")
    assert len(runs) == 1 and runs[0].state is RunState.QUEUED
    assert runs[0].evidence["evaluation_ids"] == [evaluation("m", i, BREACH).id
                                                  for i in (2, 1, 0)]
    assert "run" in decisions[3].reason and "active" in decisions[3].reason


def test_a_calm_evaluation_breaks_the_hold(store: StateStore, tmp_path: Path) -> None:
    eng = engine(store, tmp_path / "log", hold=2, mode="auto")
    for i, ev in enumerate([BREACH, CALM, BREACH, CALM, BREACH]):
        assert not eng.on_evaluation(evaluation("m", i, ev)).fire
    assert store.list_runs() == []


def test_replayed_window_starts_nothing_and_writes_nothing(store: StateStore,
                                                           tmp_path: Path) -> None:
    eng = engine(store, tmp_path / "log", hold=2, mode="auto", cooldown=0)
    window = [evaluation("m", i, BREACH) for i in range(2)]
    assert [eng.on_evaluation(e).fire for e in window] == [False, True]
    run = store.list_runs()[0]
    store.transition(run.id, RunState.SUCCEEDED, "test", [RunState.QUEUED])
    audit_before = len(store.list_audit())
    # The same window again (a replay from earlier offsets) must not fire, even with no
    # active run and no cooldown left.
    assert [eng.on_evaluation(e).reason for e in window] == ["evaluation already seen (replay)"] * 2
    assert len(store.list_runs()) == 1
    assert len(store.list_audit()) == audit_before


def test_versions_are_not_mixed_in_a_hold(store: StateStore, tmp_path: Path) -> None:
    eng = engine(store, tmp_path / "log", hold=2, mode="auto")
    assert not eng.on_evaluation(evaluation("m", 0, BREACH, version="v1")).fire
    assert not eng.on_evaluation(evaluation("m", 1, BREACH, version="v2")).fire
    assert eng.on_evaluation(evaluation("m", 2, BREACH, version="v2")).fire


def test_cooldown_then_daily_cap_hold(store: StateStore, clock: Clock, tmp_path: Path) -> None:
    eng = engine(store, tmp_path / "log", hold=1, mode="auto", cooldown="1h",
                 max_runs_per_day=2)

    def finish_active() -> None:
        for run in store.list_runs(states=[RunState.QUEUED]):
            store.transition(run.id, RunState.SUCCEEDED, "test", [RunState.QUEUED])

    offset = iter(range(1000))
    assert eng.on_evaluation(evaluation("m", next(offset), BREACH)).fire
    finish_active()
    clock.advance(1800)
    blocked = eng.on_evaluation(evaluation("m", next(offset), BREACH))
    assert not blocked.fire and blocked.reason.startswith("cooldown: 1800s left")
    clock.advance(1801)
    assert eng.on_evaluation(evaluation("m", next(offset), BREACH)).fire
    finish_active()
    clock.advance(3601)
    capped = eng.on_evaluation(evaluation("m", next(offset), BREACH))
    assert not capped.fire and capped.reason.startswith("daily cap reached (2/2")
    assert len(store.list_runs()) == 2
    suppressed = [a for a in store.list_audit() if a.action == "trigger.suppressed"]
    assert [a.evidence["reason"][:8] for a in suppressed] == ["cooldown", "daily ca"]
    clock.advance(86400)
    assert eng.on_evaluation(evaluation("m", next(offset), BREACH)).fire
    assert len(store.list_runs()) == 3


def test_paused_model_starts_no_run_until_resumed(store: StateStore, tmp_path: Path) -> None:
    eng = engine(store, tmp_path / "log", hold=1, mode="auto")
    store.pause("m", "oncall", "investigating")
    decision = eng.on_evaluation(evaluation("m", 0, BREACH))
    assert not decision.fire and decision.reason == "model is paused"
    store.resume("m", "oncall")
    assert eng.on_evaluation(evaluation("m", 1, BREACH)).fire


@pytest.mark.parametrize(("mode", "state"), [("auto", RunState.QUEUED),
                                             ("approve", RunState.PENDING_APPROVAL),
                                             ("dry-run", RunState.DRY_RUN)])
def test_mode_sets_the_first_state(store: StateStore, tmp_path: Path, mode: str,
                                   state: RunState) -> None:
    eng = engine(store, tmp_path / "log", hold=1, mode=mode)
    assert eng.on_evaluation(evaluation("m", 0, BREACH)).fire
    (run,) = store.list_runs()
    assert run.state is state and run.mode == mode
    assert [t.to_state for t in store.transitions(run.id)] == [state]


def test_evaluations_of_models_without_policy_are_stored_not_acted_on(
    store: StateStore, tmp_path: Path
) -> None:
    eng = engine(store, tmp_path / "log", hold=1, mode="auto")
    decision = eng.on_evaluation(evaluation("other", 0, BREACH))
    assert not decision.fire and decision.reason == "no policy"
    assert store.list_evaluations(model="other")[0].breached
    assert store.list_runs() == []


def test_a_long_suppression_is_audited_once_per_cause(store: StateStore, tmp_path: Path) -> None:
    eng = engine(store, tmp_path / "log", hold=1, mode="auto")
    assert eng.on_evaluation(evaluation("m", 0, BREACH)).fire
    for i in range(1, 6):  # the breach goes on while the run is active
        assert "still active" in eng.on_evaluation(evaluation("m", i, BREACH)).reason
    suppressed = [a for a in store.list_audit() if a.action == "trigger.suppressed"]
    assert len(suppressed) == 1
    eng.on_evaluation(evaluation("m", 6, CALM))  # the breach clears, then comes back
    eng.on_evaluation(evaluation("m", 7, BREACH))
    assert sum(a.action == "trigger.suppressed" for a in store.list_audit()) == 2
