"""The runner on real worker processes: retries with backoff, permanent failures and gates,
crashes, timeouts, rollbacks, artifact checks, limits, pauses; approve and dry-run modes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from policy_fixtures import TESTS, engine, evaluation, queued_run, quick_steps
from prometheus_client import CollectorRegistry

from actions.contract import DeployTarget, WorkerSettings
from daemon.act.runner import Runner
from daemon.act.runs import RunState, StepRecord
from daemon.act.store import StateStore
from deploy.config import FleetConfig

BREACH = {"drift.distribution[x]": True}


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    s = StateStore(tmp_path / "state.db")
    yield s
    s.close()


def _runner(store: StateStore, tmp_path: Path, **kw: object) -> Runner:
    return Runner(store, tmp_path / "runs", poll_interval=0.02,
                  worker_env={"PYTHONPATH": str(TESTS)}, **kw)  # type: ignore[arg-type]


def _log(tmp_path: Path) -> list[str]:
    path = tmp_path / "steps.log"
    return path.read_text().splitlines() if path.exists() else []


def _wait_terminal(store: StateStore, run_ids: list[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [store.get_run(r) for r in run_ids]
        if all(r is not None and r.state.terminal for r in runs):
            return
        time.sleep(0.02)
    raise AssertionError(f"runs not finished: {[store.get_run(r) for r in run_ids]}")


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().decode():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_retryable_error_is_retried_then_succeeds(store: StateStore, tmp_path: Path) -> None:
    registry = CollectorRegistry()
    run_id = queued_run(store, "m", quick_steps(tmp_path / "steps.log", n=2, retry_times=2))
    _runner(store, tmp_path, registry=registry).execute(run_id)
    run = store.get_run(run_id)
    assert run is not None and run.state is RunState.SUCCEEDED
    assert [s.attempts for s in store.steps(run_id)] == [3, 3]
    retries = [a for a in store.list_audit(run_id=run_id) if a.action == "run.step_retry"]
    assert len(retries) == 4 and retries[0].evidence["retry_in_s"] == 0.05
    # what each worker reported in its result file, on the daemon's registry
    finished = "lifeguard_action_steps_finished_total"
    assert registry.get_sample_value(finished, {"step": "s1", "outcome": "retryable"}) == 2
    assert registry.get_sample_value(finished, {"step": "s1", "outcome": "done"}) == 1
    assert registry.get_sample_value("lifeguard_action_train_loss", {"step": "s0"}) == 0.25


def test_the_spec_file_is_the_workers_only_input(store: StateStore, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFEGUARD_TOKEN", "from-the-daemon-env")  # must not reach the step
    fleet = FleetConfig(replicas=["http://127.0.0.1:9"], repository=tmp_path / "repo")
    settings = WorkerSettings(output_dir=tmp_path / "cache", threads=1, device="cpu",
                              deploy=DeployTarget(fleet=fleet, state_path=tmp_path / "s.db",
                                                  api_url="http://127.0.0.1:8",
                                                  token="t0ken"))  # type: ignore[arg-type]
    steps = ({"name": "look", "uses": "runner_quick_steps:inspect", "timeout": 30,
              "params": {"expect_token": "t0ken", "threads": 2}},)
    run_id = queued_run(store, "m", steps)
    monkeypatch.chdir(tmp_path)  # a relative work root means the daemon's folder, not the worker's
    Runner(store, Path("runs"), settings=settings,
           worker_env={"PYTHONPATH": str(TESTS)}).execute(run_id)
    assert store.get_run(run_id).state is RunState.SUCCEEDED  # type: ignore[union-attr]
    seen = store.steps(run_id)[0].evidence
    assert seen["step_dir"] == str(tmp_path / "runs" / run_id / "00-look")
    assert seen["spec_mode"] == "0o600" and seen["lifeguard_env"] == []
    assert seen["token_matches"] and seen["api_url"] == "http://127.0.0.1:8"
    assert (seen["threads"], seen["device"]) == (2, "cpu")  # a param overrides the default
    assert seen["output_dir"] == str(tmp_path / "cache")
    assert (seen["model"], seen["step"], seen["attempt"]) == ("m", "look", 1)
    assert not list((tmp_path / "runs" / run_id).glob("*.spec.json")), "token left on disk"


def test_a_misspelled_param_of_a_builtin_step_fails_before_a_worker_starts(
    store: StateStore, tmp_path: Path,
) -> None:
    run_id = queued_run(store, "m", ({"name": "fine_tune", "params": {"epocs": 2}},))
    _runner(store, tmp_path).execute(run_id)
    run = store.get_run(run_id)
    assert run is not None and run.state is RunState.FAILED and "epocs" in (run.error or "")
    assert not list((tmp_path / "runs" / run_id).glob("*.log"))  # no worker ran


def test_gate_failure_fails_the_run_with_evidence_and_stops(store: StateStore,
                                                            tmp_path: Path) -> None:
    steps = quick_steps(tmp_path / "steps.log", n=2)
    steps = ({**steps[0], "params": {**steps[0]["params"], "gate_fail": True}}, steps[1])
    run_id = queued_run(store, "m", steps)
    _runner(store, tmp_path).execute(run_id)
    run = store.get_run(run_id)
    assert run is not None and run.state is RunState.FAILED
    assert "candidate lost" in (run.error or "")
    last = store.transitions(run_id)[-1]
    assert last.evidence["error_type"] == "GateFailed" and last.evidence["champion"] == 0.9
    assert len([ln for ln in _log(tmp_path) if ln.startswith("start")]) == 1  # no retry, no s1


def test_worker_crash_is_retried_up_to_max_attempts(store: StateStore, tmp_path: Path) -> None:
    steps = ({"name": "oom", "uses": "runner_quick_steps:crash", "max_attempts": 2,
              "backoff": 0.01, "max_backoff": 0.01, "timeout": 30, "params": {}},)
    run_id = queued_run(store, "m", steps)
    _runner(store, tmp_path).execute(run_id)
    run = store.get_run(run_id)
    assert run is not None and run.state is RunState.FAILED
    assert "crashed" in (run.error or "") and "exited 3" in (run.error or "")
    last = store.transitions(run_id)[-1].evidence
    assert "CUDA out of memory (simulated)" in last["log_tail"]
    assert Path(last["log"]).name == ".step-00-attempt-2.log"
    assert sum(a.action == "run.step_retry" for a in store.list_audit(run_id=run_id)) == 1


def test_step_timeout_kills_the_worker_and_fails(store: StateStore, tmp_path: Path) -> None:
    steps = ({"name": "hang", "uses": "runner_quick_steps:hang", "max_attempts": 3,
              "timeout": 1.0, "params": {"log": str(tmp_path / "steps.log")}},)
    run_id = queued_run(store, "m", steps)
    _runner(store, tmp_path).execute(run_id)
    run = store.get_run(run_id)
    assert run is not None and run.state is RunState.FAILED and "timeout" in (run.error or "")
    assert len(_log(tmp_path)) <= 1, "a timeout is not retried"
    assert _processes_mentioning(str(tmp_path / "runs")) == [], "the worker was killed"


def test_a_timed_out_step_is_cleaned_up_after_and_a_failed_one_is_not(
        store: StateStore, tmp_path: Path) -> None:
    """The hook a deploy uses to put the fleet back on one version runs after a timeout only
    (the deploy's reconcile itself is tested against real replicas in tests/deploy)."""
    calls: list[tuple[str, str]] = []
    runner = _runner(store, tmp_path, after_timeout=lambda run, step, fence: calls.append(
        (run.id, step)))
    hang = ({"name": "deploy", "uses": "runner_quick_steps:hang", "timeout": 1.0,
             "params": {"log": str(tmp_path / "steps.log")}},)
    hung = queued_run(store, "m", hang)
    runner.execute(hung)
    assert calls == [(hung, "deploy")]
    failing = queued_run(store, "m2", quick_steps(tmp_path / "other.log", n=1, fail=True))
    runner.execute(failing)
    run = store.get_run(failing)
    assert run is not None and run.state is RunState.FAILED
    assert calls == [(hung, "deploy")], "a step that failed on its own is not cleaned up"


def test_rolled_back_step_ends_the_run_rolled_back(store: StateStore, tmp_path: Path) -> None:
    steps = quick_steps(tmp_path / "steps.log", n=2, rolled_back=True)
    run_id = queued_run(store, "m", steps)
    _runner(store, tmp_path).execute(run_id)
    run = store.get_run(run_id)
    assert run is not None and run.state is RunState.ROLLED_BACK and run.next_step == 1


def test_tampered_artifact_fails_the_next_step(store: StateStore, tmp_path: Path) -> None:
    run_id = queued_run(store, "m", quick_steps(tmp_path / "steps.log", n=2))
    store.transition(run_id, RunState.RUNNING, "test", [RunState.QUEUED])
    fake = tmp_path / "out0.txt"
    fake.write_text("changed after it was recorded")
    store.complete_step(run_id, StepRecord(0, "s0", "ok",
                                           {"out0": {"path": str(fake), "sha256": "0" * 64}}))
    _runner(store, tmp_path).execute(run_id)
    run = store.get_run(run_id)
    assert run is not None and run.state is RunState.FAILED
    assert "changed since it was produced" in (run.error or "")
    last = store.transitions(run_id)[-1].evidence
    assert last["error_type"] == "IntegrityError" and last["artifact"] == "out0"
    assert _log(tmp_path) == []  # checked before the step was called


def test_one_run_per_model_and_a_global_limit(store: StateStore, tmp_path: Path) -> None:
    log = tmp_path / "steps.log"
    ids = [queued_run(store, "a", quick_steps(log, hold="before", hold_s=0.3), trigger="1"),
           queued_run(store, "a", quick_steps(log, hold="before", hold_s=0.3), trigger="2"),
           queued_run(store, "b", quick_steps(log, hold="before", hold_s=0.3), trigger="3"),
           queued_run(store, "c", quick_steps(log, hold="before", hold_s=0.3), trigger="4")]
    runner = _runner(store, tmp_path, max_concurrent=2).start()
    try:
        _wait_terminal(store, ids)
    finally:
        runner.stop()
    spans: dict[str, tuple[float, float, str]] = {}
    for line in _log(tmp_path):
        kind, run_id, _, *rest = line.split()
        t = float(next(p for p in rest if p.startswith("t="))[2:]) if kind != "holding" else 0
        if kind == "start":
            spans[run_id] = (t, 0.0, "")
        elif kind == "end":
            spans[run_id] = (spans[run_id][0], t, "")
    model = dict(zip(ids, "aabc", strict=True))
    intervals = sorted((s, e, model[r]) for r, (s, e, _) in spans.items())
    for i, (s, _, m) in enumerate(intervals):
        overlapping = [iv for iv in intervals[:i] if iv[1] > s]
        assert len(overlapping) < 2, "never more than 2 runs at once"
        assert all(o[2] != m for o in overlapping), "never 2 runs of one model at once"
    assert all(store.get_run(r).state is RunState.SUCCEEDED for r in ids)  # type: ignore[union-attr]


def test_paused_model_is_not_started_until_resumed(store: StateStore, tmp_path: Path) -> None:
    run_id = queued_run(store, "m", quick_steps(tmp_path / "steps.log"))
    store.pause("m", "oncall")
    runner = _runner(store, tmp_path)
    assert runner.schedule() == []
    store.resume("m", "oncall")
    assert runner.schedule() == [run_id]
    _wait_terminal(store, [run_id])
    runner.stop()
    assert store.get_run(run_id).state is RunState.SUCCEEDED  # type: ignore[union-attr]


def test_dry_run_never_executes_a_step(store: StateStore, tmp_path: Path) -> None:
    eng = engine(store, tmp_path / "steps.log", hold=1, mode="dry-run")
    assert eng.on_evaluation(evaluation("m", 0, BREACH)).fire
    runner = _runner(store, tmp_path).start()
    time.sleep(0.3)  # several scheduling rounds
    runner.stop()
    (run,) = store.list_runs()
    assert run.state is RunState.DRY_RUN
    assert _log(tmp_path) == [] and not (tmp_path / "runs").exists()


def test_approve_mode_waits_and_proceeds_only_when_approved(store: StateStore,
                                                            tmp_path: Path) -> None:
    eng = engine(store, tmp_path / "steps.log", hold=1, mode="approve")
    assert eng.on_evaluation(evaluation("m", 0, BREACH)).fire
    (run,) = store.list_runs()
    runner = _runner(store, tmp_path).start()
    try:
        time.sleep(0.3)
        assert store.get_run(run.id).state is RunState.PENDING_APPROVAL  # type: ignore[union-attr]
        assert _log(tmp_path) == []
        assert store.transition(run.id, RunState.QUEUED, "alice", [RunState.PENDING_APPROVAL])
        runner.wake()
        _wait_terminal(store, [run.id])
    finally:
        runner.stop()
    assert store.get_run(run.id).state is RunState.SUCCEEDED  # type: ignore[union-attr]
    actors = [(t.to_state.value, t.actor) for t in store.transitions(run.id)]
    assert actors[:3] == [("pending_approval", "policy"), ("queued", "alice"),
                          ("running", "runner")]


def test_rejected_run_never_runs(store: StateStore, tmp_path: Path) -> None:
    eng = engine(store, tmp_path / "steps.log", hold=1, mode="approve")
    eng.on_evaluation(evaluation("m", 0, BREACH))
    (run,) = store.list_runs()
    assert store.transition(run.id, RunState.REJECTED, "bob", [RunState.PENDING_APPROVAL])
    assert _runner(store, tmp_path).schedule() == []
    assert not store.transition(run.id, RunState.QUEUED, "bob", [RunState.PENDING_APPROVAL])


def test_worker_runs_in_another_process(store: StateStore, tmp_path: Path) -> None:
    run_id = queued_run(store, "m", quick_steps(tmp_path / "steps.log"))
    _runner(store, tmp_path).execute(run_id)
    pid = int(_log(tmp_path)[0].split("pid=")[1].split()[0])
    assert pid != os.getpid()


def test_snapshot_and_champion_are_captured_at_trigger_time(store: StateStore,
                                                           tmp_path: Path) -> None:
    from policy_fixtures import quick_pipeline

    from daemon.act.config import ModelPolicy
    from daemon.act.policy import PolicyEngine

    snapshots = iter([tmp_path / "snap-1.jsonl", tmp_path / "snap-2.jsonl"])
    eng = PolicyEngine(store, {"m": ModelPolicy.model_validate(
                           {"trigger": {"key": "drift.*"}, "pipeline": "q", "mode": "approve"})},
                       {"q": quick_pipeline(tmp_path / "steps.log", n_steps=1)},
                       snapshot_provider=lambda model: next(snapshots),
                       champion_provider=lambda model: tmp_path / f"{model}-champion")
    eng.on_evaluation(evaluation("m", 0, BREACH))
    (run,) = store.list_runs()
    assert run.snapshot_path == str(tmp_path / "snap-1.jsonl")
    assert run.evidence["snapshot_path"] == run.snapshot_path
    # Approved later: the step still gets the snapshot taken when the trigger fired.
    store.transition(run.id, RunState.QUEUED, "alice", [RunState.PENDING_APPROVAL])
    _runner(store, tmp_path).execute(run.id)
    (record,) = store.steps(run.id)
    assert record.evidence["snapshot"] == str(tmp_path / "snap-1.jsonl")
    assert record.evidence["champion"] == str(tmp_path / "m-champion")


def test_pause_holds_a_run_between_steps(store: StateStore, tmp_path: Path) -> None:
    log = tmp_path / "steps.log"
    run_id = queued_run(store, "m", quick_steps(log, n=2, hold="after", hold_s=1.5))
    runner = _runner(store, tmp_path).start()
    try:
        deadline = time.monotonic() + 20
        while not any(ln.startswith(f"holding {run_id} 0") for ln in _log(tmp_path)):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        store.pause("m", "oncall")
        while store.get_run(run_id).next_step < 1:  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.3)
        assert not any(ln.startswith(f"start {run_id} 1") for ln in _log(tmp_path))
        store.resume("m", "oncall")
        _wait_terminal(store, [run_id])
    finally:
        runner.stop()
    assert store.get_run(run_id).state is RunState.SUCCEEDED  # type: ignore[union-attr]


def test_graceful_stop_kills_the_worker_and_a_new_runner_resumes(store: StateStore,
                                                                 tmp_path: Path) -> None:
    run_id = queued_run(store, "m", quick_steps(tmp_path / "steps.log", n=1, hold="before",
                                                hold_s=60))
    runner = _runner(store, tmp_path).start()
    deadline = time.monotonic() + 20
    while not any(ln.startswith("holding") for ln in _log(tmp_path)):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    worker = int(next(ln for ln in _log(tmp_path) if ln.startswith("holding")).split("pid=")[1])
    runner.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)
    assert store.get_run(run_id).state is RunState.RUNNING  # type: ignore[union-attr]
    runner = _runner(store, tmp_path).start()
    try:
        _wait_terminal(store, [run_id])
    finally:
        runner.stop()
    assert store.get_run(run_id).state is RunState.SUCCEEDED  # type: ignore[union-attr]


def test_models_owned_elsewhere_are_left_alone(store: StateStore, tmp_path: Path) -> None:
    mine = queued_run(store, "mine", quick_steps(tmp_path / "steps.log"), trigger="1")
    queued_run(store, "theirs", quick_steps(tmp_path / "steps.log"), trigger="2")
    runner = _runner(store, tmp_path, owns=lambda model: model == "mine")
    assert runner.schedule() == [mine]
    _wait_terminal(store, [mine])
    runner.stop()


def test_a_result_written_before_the_daemon_died_is_recorded_not_rerun(
    store: StateStore, tmp_path: Path,
) -> None:
    run_id = queued_run(store, "m", quick_steps(tmp_path / "steps.log", n=2))
    store.transition(run_id, RunState.RUNNING, "runner", [RunState.QUEUED])
    from actions.contract import content_sha256

    # What a worker leaves when it finished step 0 just before a kill -9 of the daemon.
    work = tmp_path / "runs" / run_id
    (work / "00-s0").mkdir(parents=True)
    out = work / "00-s0" / "out.txt"
    out.write_text("done\n")
    result = {"ok": True, "status": "ok", "evidence": {"loss": 0.1},
              "artifacts": {"out0": {"path": str(out), "sha256": content_sha256(out)}}}
    (work / ".step-00-attempt-1.result.json").write_text(json.dumps(result))
    _runner(store, tmp_path).execute(run_id)
    assert store.get_run(run_id).state is RunState.SUCCEEDED  # type: ignore[union-attr]
    first = store.steps(run_id)[0]
    assert first.evidence == {"loss": 0.1, "recovered_result": True}
    assert [ln.split()[2] for ln in _log(tmp_path) if ln.startswith("start")] == ["1"]


def test_a_result_whose_artifact_changed_is_not_trusted(store: StateStore,
                                                         tmp_path: Path) -> None:
    run_id = queued_run(store, "m", quick_steps(tmp_path / "steps.log", n=1))
    store.transition(run_id, RunState.RUNNING, "runner", [RunState.QUEUED])
    work = tmp_path / "runs" / run_id
    work.mkdir(parents=True)
    result = {"ok": True, "status": "ok", "evidence": {},
              "artifacts": {"out0": {"path": str(tmp_path / "gone.txt"), "sha256": "0" * 64}}}
    (work / ".step-00-attempt-1.result.json").write_text(json.dumps(result))
    _runner(store, tmp_path).execute(run_id)
    assert store.get_run(run_id).state is RunState.SUCCEEDED  # type: ignore[union-attr]
    assert "recovered_result" not in store.steps(run_id)[0].evidence
    assert len([ln for ln in _log(tmp_path) if ln.startswith("start")]) == 1


def test_a_recorded_rollback_ends_the_run_after_a_crash(store: StateStore,
                                                        tmp_path: Path) -> None:
    run_id = queued_run(store, "m", quick_steps(tmp_path / "steps.log", n=2))
    store.transition(run_id, RunState.RUNNING, "runner", [RunState.QUEUED])
    # Killed right after the deploy step recorded its rollback, before the run was ended.
    store.complete_step(run_id, StepRecord(0, "s0", "rolled_back", {}, {"canary": "failed"}))
    _runner(store, tmp_path).execute(run_id)
    run = store.get_run(run_id)
    assert run is not None and run.state is RunState.ROLLED_BACK
    assert store.transitions(run_id)[-1].evidence == {"step": "s0", "canary": "failed"}
    assert _log(tmp_path) == []  # step 1 never ran
