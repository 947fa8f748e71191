"""A version name a producer makes up cannot steer a configured model: it is not windowed
(no reference, no evaluation), its breaches start no run, and a retrain snapshot trains only
on the serving version's labelled rows. What vouches for a version: the model's ``versions``
list, the fleet repository's published versions, the rollout store's deployed one."""

from __future__ import annotations

import json
from pathlib import Path

from policy_fixtures import evaluation, quick_pipeline
from prometheus_client import CollectorRegistry, generate_latest

from actions.snapshot import read_snapshot
from daemon.act.config import ModelPolicy
from daemon.act.policy import PolicyEngine
from daemon.act.store import StateStore
from daemon.assembly import version_gate
from daemon.config import DaemonConfig
from daemon.events import FeedbackEvent, InferenceEvent, Output
from daemon.ingest.batch import PartitionBatch
from daemon.monitor.config import LabelJoinConfig, ReferenceConfig, WindowConfig
from daemon.monitor.snapshots import SnapshotWriter
from daemon.monitor.versions import VersionGate
from daemon.monitor.window_store import WindowStore, register
from daemon.monitor.windows import MonitoringSettings
from deploy.repository import ModelRepository

SETTINGS = MonitoringSettings(WindowConfig(size=100), ReferenceConfig(first_n=10),
                              LabelJoinConfig())
BREACH = {"drift.distribution[text_length]": True}


def _labelled(version: str, n: int, start: int = 0) -> list[InferenceEvent | FeedbackEvent]:
    events: list[InferenceEvent | FeedbackEvent] = []
    for i in range(start, start + n):
        rid = f"{version}-{i}"
        events.append(InferenceEvent(request_id=rid, ts=i * 1000, model="m", model_version=version,
                                     latency_ms=5.0, input={"text": f"text {i}"},
                                     output=Output(label="positive", score=0.9)))
        events.append(FeedbackEvent(request_id=rid, ts=i * 1000 + 1, model="m", label="negative"))
    return events


def test_the_gate_admits_what_is_vouched_for() -> None:
    published = {"m": {"1"}}
    clock = [0.0]
    gate = VersionGate({"m": None, "listed": ["a"], "open": None},
                       published=lambda m: published.get(m, set()),
                       deployed=lambda m: "1" if m == "m" else None, clock=lambda: clock[0])
    assert gate.admits("m", "1") and not gate.admits("m", "evil")
    published["m"].add("2")  # a canary published: admitted within the cache's 5 s
    clock[0] = 6.0
    assert gate.admits("m", "2")
    assert gate.admits("listed", "a") and not gate.admits("listed", "b")
    assert gate.admits("unconfigured", "anything")  # no policy: nothing to steer
    assert gate.serving("m") == {"1"} and gate.serving("listed") == {"a"}
    nothing = VersionGate({"m": None})  # no allow-list, no fleet: nothing can vouch
    assert nothing.admits("m", "whatever") and nothing.serving("m") is None


def test_an_unadmitted_version_is_counted_not_windowed(tmp_path: Path) -> None:
    store = WindowStore(lambda name: SETTINGS, SETTINGS, max_models=4,
                        versions=VersionGate({"m": ["1"]}))
    events = _labelled("1", 30) + _labelled("evil", 30)
    store.apply(PartitionBatch("t", 0, events, 0, len(events) - 1))
    windows = store.get("m")
    assert windows is not None and windows.versions() == {"1"}
    assert store.unadmitted == {"m": 30}
    registry = CollectorRegistry()
    register(store, registry)
    assert 'lifeguard_unadmitted_version_events_total{model="m"} 30.0' in (
        generate_latest(registry).decode())
    path = SnapshotWriter(store, tmp_path, min_rows=20)("m")
    assert path is not None
    assert {r.request_id.split("-")[0] for r in read_snapshot(path)} == {"1"}


def test_the_snapshot_trains_on_the_deployed_version_only(tmp_path: Path) -> None:
    # Both published (a canary is under way), 1 deployed: both windowed, 1 trained on.
    gate = VersionGate({"m": None}, published=lambda m: ["1", "2"], deployed=lambda m: "1")
    store = WindowStore(lambda name: SETTINGS, SETTINGS, versions=gate)
    events = _labelled("1", 25) + _labelled("2", 25)
    store.apply(PartitionBatch("t", 0, events, 0, len(events) - 1))
    windows = store.get("m")
    assert windows is not None and windows.versions() == {"1", "2"}
    path = SnapshotWriter(store, tmp_path, min_rows=20)("m")
    assert path is not None
    rows = read_snapshot(path)
    assert len(rows) == 25 and all(r.request_id.startswith("1-") for r in rows)


def test_a_breach_of_an_unadmitted_version_starts_no_run(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    gate = VersionGate({"m": ["v1"]})
    policy = ModelPolicy.model_validate({"trigger": {"key": "drift.*"}, "pipeline": "quick",
                                         "hold": 1, "mode": "auto"})
    eng = PolicyEngine(store, {"m": policy}, {"quick": quick_pipeline(tmp_path / "log")},
                       version_admitted=gate.admits)
    fake = eng.on_evaluation(evaluation("m", 1, BREACH, version="evil"))
    assert not fake.fire and "not admitted" in fake.reason
    assert store.list_runs(model="m") == []
    assert [a.action for a in store.list_audit(model="m")][-1] == "trigger.ignored"
    real = eng.on_evaluation(evaluation("m", 2, BREACH, version="v1"))
    assert real.fire and len(store.list_runs(model="m")) == 1
    store.close()


def test_the_daemons_gate_reads_the_repository_and_the_allow_list(tmp_path: Path) -> None:
    source = tmp_path / "export"
    source.mkdir()
    (source / "model.onnx").write_bytes(b"onnx")
    (source / "model_info.json").write_text(json.dumps(
        {"task": "sequence-classification", "labels": ["negative", "positive"],
         "max_length": 32, "precision": "fp32"}))
    ModelRepository(tmp_path / "repo").publish("m", source, run_id="r1")
    config = DaemonConfig.model_validate({
        "state": {"path": str(tmp_path / "state.db")},
        "fleet": {"replicas": ["http://127.0.0.1:1"], "repository": str(tmp_path / "repo")},
        "models": [{"name": "m"}, {"name": "n", "versions": ["blue"]}]})
    gate = version_gate(config)
    assert gate.admits("m", "1") and not gate.admits("m", "2") and not gate.admits("m", "x")
    assert gate.admits("n", "blue") and not gate.admits("n", "green")
