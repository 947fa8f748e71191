"""Breach episodes in the audit log, on a real SQLite store: a breach held for 20 evaluations
is two lines (it began, it ended, with the evaluation that ended it), reminders come at most
once per interval, each model version has its own episode, and a replay writes nothing."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from policy_fixtures import Clock, evaluation

from daemon.act.runs import AuditEntry
from daemon.act.store import StateStore
from daemon.config import ConfigError, parse_config

BREACH = {"accuracy.accuracy": True, "latency.p95_ms": False}
CALM = {"accuracy.accuracy": False, "latency.p95_ms": False}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_store(tmp_path: Path, clock: Clock) -> Iterator[Callable[[float], StateStore]]:
    """A store on a real file with the test's clock and the given reminder interval."""
    opened: list[StateStore] = []

    def make(reminder_s: float) -> StateStore:
        opened.append(StateStore(tmp_path / "state.db", clock=clock,
                                 breach_reminder_s=reminder_s))
        return opened[-1]

    yield make
    for store in opened:
        store.close()


def _feed(store: StateStore, clock: Clock, plan: list[dict[str, bool]], version: str = "v1",
          start: int = 0, step_s: float = 10.0) -> list[str]:
    ids = []
    for i, breaches in enumerate(plan):
        ev = evaluation("m", start + i, breaches, version=version)
        assert store.add_evaluation(ev)
        ids.append(ev.id)
        clock.advance(step_s)
    return ids


def _breach_lines(store: StateStore) -> list[AuditEntry]:
    return [a for a in store.list_audit(limit=1000) if a.action.startswith("breach.")]


def test_a_breach_of_20_evaluations_is_two_audit_lines(make_store: Callable[[float], StateStore],
        clock: Clock) -> None:
    store = make_store(3600.0)  # longer than the 240 s fed
    ids = _feed(store, clock, [CALM] * 2 + [BREACH] * 20 + [CALM] * 2)
    lines = _breach_lines(store)
    assert [a.action for a in lines] == ["breach.began", "breach.ended"]
    began, ended = lines
    assert began.evidence["evaluation_id"] == ids[2]
    assert [b["key"] for b in began.evidence["breaches"]] == ["accuracy.accuracy"]
    assert ended.evidence["evaluation_id"] == ids[22], "the evaluation that ended it"
    assert ended.evidence["began_evaluation_id"] == ids[2]
    assert ended.evidence["began_at"] == began.ts
    assert len(store.list_evaluations("m", limit=100)) == 24  # every evaluation is still stored


def test_reminders_come_at_most_once_per_interval(make_store: Callable[[float], StateStore],
        clock: Clock) -> None:
    store = make_store(60.0)
    _feed(store, clock, [BREACH] * 20)  # 190 s of breach, one evaluation every 10 s
    lines = _breach_lines(store)
    assert [a.action for a in lines] == ["breach.began"] + ["breach.ongoing"] * 3
    gaps = [b.ts - a.ts for a, b in itertools.pairwise(lines)]
    assert all(gap >= 60.0 for gap in gaps), gaps
    assert lines[-1].evidence["began_evaluation_id"] == lines[0].evidence["evaluation_id"]


def test_no_reminders_when_turned_off(make_store: Callable[[float], StateStore],
        clock: Clock) -> None:
    store = make_store(0.0)
    _feed(store, clock, [BREACH] * 20, step_s=3600.0)
    assert [a.action for a in _breach_lines(store)] == ["breach.began"]


def test_each_version_has_its_own_episode_and_a_replay_writes_nothing(
        make_store: Callable[[float], StateStore], clock: Clock) -> None:
    store = make_store(3600.0)
    for i in range(6):  # a canary: the stable version breaches while the new one is calm
        _feed(store, clock, [BREACH], version="v1", start=2 * i)
        _feed(store, clock, [CALM], version="v2", start=2 * i + 1)
    assert [(a.action, a.evidence["model_version"]) for a in _breach_lines(store)] == [
        ("breach.began", "v1")]
    assert not store.add_evaluation(evaluation("m", 0, BREACH, version="v1"))  # a replay
    _feed(store, clock, [CALM], version="v1", start=100)
    _feed(store, clock, [BREACH], version="v1", start=101)
    assert [a.action for a in _breach_lines(store)] == ["breach.began", "breach.ended",
                                                         "breach.began"]


def test_the_reminder_interval_is_configured_with_a_duration() -> None:
    assert parse_config({"audit": {"breach_reminder": "30m"}}).audit.breach_reminder == 1800.0
    assert parse_config({}).audit.breach_reminder == 3600.0
    with pytest.raises(ConfigError, match=r"audit\.breach_remindr"):
        parse_config({"audit": {"breach_remindr": "1h"}})
