"""Three real replica processes on loopback, a real broker, real ONNX Runtime, a real SQLite
state file, under a steady client load: the rollouts the issue promises."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

from daemon.ingest.broker import LocalBroker, ensure_topics
from deploy.config import CanaryConfig, FleetConfig, RolloutConfig
from deploy.errors import ReplicaRejectedError
from deploy.fleet import FleetClient
from deploy.judge import KafkaTrafficJudge
from deploy.repository import ModelRepository, triton_config
from deploy.rollout import RolloutController
from deploy.rollout_store import RolloutStore
from deploy.step import DeployRequest, deploy
from harness.replicas import (
    MODEL,
    REPO_ROOT,
    TOPIC,
    ReplicaProcess,
    SteadyLoad,
    served_versions,
    swapped_labels,
)
from harness.tiny_models import cached_onnx_classifier, review_corpus
from lifeguard.errors import IntegrityError

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CANARY = CanaryConfig(replicas=1, min_events=60, min_labelled=30, max_error_rate=0.05,
                      latency_slo_ms=3000, max_latency_ratio=50, max_accuracy_drop=0.1,
                      poll_interval_s=0.3, timeout_s=60)


def rollout_config(strategy: Literal["rolling", "canary"]) -> RolloutConfig:
    return RolloutConfig(strategy=strategy, canary=CANARY, request_timeout_s=5,
                         load_timeout_s=60, replica_timeout_s=4)


class Fleet:
    def __init__(self, root: Path, broker: LocalBroker) -> None:
        self.root = root
        self.broker = broker
        self.repository = ModelRepository(root / "repo")
        self.fp32 = cached_onnx_classifier("fp32")
        self.int8 = cached_onnx_classifier("int8")
        self.wrong = swapped_labels(self.fp32, root / "wrong")
        self.stable = self.repository.publish(MODEL, self.fp32, run_id="seed").version
        self.replicas = [ReplicaProcess(self.repository.root, f"replica-{i}",
                                        [f"{MODEL}:{self.stable}"], broker.bootstrap, root)
                         for i in range(3)]
        self.examples = review_corpus(300, seed=7)

    @property
    def urls(self) -> list[str]:
        return [r.url for r in self.replicas]

    def config(self, strategy: Literal["rolling", "canary"]) -> FleetConfig:
        return FleetConfig(replicas=self.urls, repository=self.repository.root,
                           rollout=rollout_config(strategy))

    def reset(self) -> None:
        """Every test starts from the stable version on three live replicas."""
        for replica in self.replicas:
            if replica.process is None or replica.process.poll() is not None:
                replica.start()
        for replica in self.replicas:
            replica.wait_ready()
        fleet = FleetClient(self.urls)
        for client in fleet.replicas:
            client.load(MODEL, triton_config(MODEL, "sequence-classification", self.stable))
        fleet.close()
        assert set(served_versions(self.urls).values()) == {self.stable}

    def load(self, kafka: bool = True) -> SteadyLoad:
        return SteadyLoad(self.urls, self.examples, self.broker.bootstrap if kafka else None)


@pytest.fixture(scope="module")
def fleet(broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    ensure_topics(broker.bootstrap, {TOPIC: 1})
    built = Fleet(tmp_path_factory.mktemp("fleet"), broker)
    for replica in built.replicas:
        replica.start()
    try:
        yield built
    finally:
        for replica in built.replicas:
            replica.stop()


@pytest.fixture()
def fresh(fleet: Fleet) -> Fleet:
    fleet.reset()
    return fleet


def wait_for(predicate, timeout_s: float = 60.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def test_rolling_deploy_under_load_fails_no_request(fresh: Fleet, tmp_path: Path) -> None:
    request = DeployRequest(MODEL, fresh.int8, run_id="rolling-good")
    with fresh.load(kafka=False) as load:
        time.sleep(0.5)
        result = deploy(request, fresh.config("rolling"), tmp_path / "state.db")
        time.sleep(0.5)
    assert result.outcome == "promoted", result.reason
    assert served_versions(fresh.urls) == dict.fromkeys(fresh.urls, result.version)
    assert load.stats.failed == 0, load.stats.failures
    # The load really spanned the deploy: both versions answered it.
    assert load.stats.by_version.get(str(fresh.stable), 0) > 0
    assert load.stats.by_version.get(str(result.version), 0) > 0
    events = RolloutStore(tmp_path / "state.db").events(result.rollout_id)
    assert [e.detail["url"] for e in events if e.kind == "applied"] == fresh.urls


def test_bad_canary_rolls_back_by_itself(fresh: Fleet, tmp_path: Path) -> None:
    config = fresh.config("canary")
    judge = KafkaTrafficJudge(fresh.broker.bootstrap, TOPIC, MODEL, CANARY)
    request = DeployRequest(MODEL, fresh.wrong, run_id="canary-wrong-labels")
    with fresh.load() as load:
        result = deploy(request, config, tmp_path / "state.db", judge)
        time.sleep(0.3)
    judge.close()
    assert result.outcome == "rolled_back"
    assert "accuracy drop" in (result.reason or "")
    assert served_versions(fresh.urls) == dict.fromkeys(fresh.urls, fresh.stable)
    assert load.stats.failed == 0, load.stats.failures
    assert load.stats.by_version.get(str(result.version), 0) > 0  # the canary did serve
    kinds = [e.kind for e in RolloutStore(tmp_path / "state.db").events(result.rollout_id)]
    assert "verdict" in kinds and "promote" not in kinds
    # Pinned: the repository withdrew the canary, so a replica started by name serves stable
    # (the version the rollback restored, whatever else was published since).
    assert set(fresh.repository.withdrawn(MODEL)) == {result.version}
    restarted = ReplicaProcess(fresh.repository.root, "restarted", [MODEL], None, tmp_path)
    try:
        restarted.start().wait_ready()
        assert served_versions([restarted.url]) == {restarted.url: fresh.stable}
    finally:
        restarted.stop()


def test_replica_killed_mid_rollout_is_reconciled_after_restart(fresh: Fleet,
                                                                tmp_path: Path) -> None:
    store = RolloutStore(tmp_path / "state.db")
    victim = fresh.replicas[2]
    request = DeployRequest(MODEL, fresh.int8, run_id="rolling-kill-replica")

    def kill_after_first_replica() -> None:
        def first_applied() -> bool:
            record = store.latest(MODEL)
            return record is not None and any(
                e.kind == "applied" for e in store.events(record.id))
        wait_for(first_applied, what="the first replica to take the new version")
        victim.kill()

    killer = threading.Thread(target=kill_after_first_replica, daemon=True)
    with fresh.load(kafka=False) as load:
        killer.start()
        result = deploy(request, fresh.config("rolling"), tmp_path / "state.db")
    killer.join(5)
    assert result.outcome == "promoted"
    assert victim.url in (result.reason or "")  # reported as pending, not silently done
    served = served_versions(fresh.urls)
    assert served == {**dict.fromkeys(fresh.urls[:2], result.version), victim.url: None}
    assert set(load.stats.per_replica_failed) <= {victim.url}

    victim.start().wait_ready()  # comes back serving the version it was started with
    assert served_versions([victim.url])[victim.url] == fresh.stable
    fleet_client = FleetClient(fresh.urls)
    controller = RolloutController(fleet_client, fresh.repository, store,
                                   rollout_config("rolling"))
    controller.reconcile(MODEL)
    fleet_client.close()
    assert served_versions(fresh.urls) == dict.fromkeys(fresh.urls, result.version)
    kinds = [e.kind for e in store.events(result.rollout_id)]
    assert "replica_skipped" in kinds and "drift" in kinds


def test_canary_replica_killed_rolls_back(fresh: Fleet, tmp_path: Path) -> None:
    store = RolloutStore(tmp_path / "state.db")
    judge = KafkaTrafficJudge(fresh.broker.bootstrap, TOPIC, MODEL, CANARY)
    canary_replica = fresh.replicas[0]

    def kill_when_canary_serves() -> None:
        def serving() -> bool:
            record = store.active(MODEL)
            return record is not None and record.canary_since is not None
        wait_for(serving, what="the canary to serve")
        canary_replica.kill()

    killer = threading.Thread(target=kill_when_canary_serves, daemon=True)
    killer.start()
    request = DeployRequest(MODEL, fresh.int8, run_id="canary-kill-replica")
    with fresh.load():
        result = deploy(request, fresh.config("canary"), tmp_path / "state.db", judge)
    killer.join(5)
    judge.close()
    assert result.outcome == "rolled_back"
    assert "canary replica" in (result.reason or "")
    assert served_versions(fresh.urls[1:]) == dict.fromkeys(fresh.urls[1:], fresh.stable)


def test_controller_killed_mid_canary_resumes_and_promotes(fresh: Fleet, tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({
        "fleet": json.loads(fresh.config("canary").model_dump_json()),
        "kafka": fresh.broker.bootstrap, "topic": TOPIC, "model": MODEL,
        "source_dir": str(fresh.int8), "run_id": "canary-controller-crash",
        "state_path": str(state)}))
    command = [sys.executable, "-m", "tests.deploy.controller_main", str(spec)]
    store = RolloutStore(state)
    with fresh.load() as load:
        first = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        wait_for(lambda: (r := store.active(MODEL)) is not None and r.canary_since is not None,
                 what="the canary phase")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        record = store.active(MODEL)
        assert record is not None and record.phase == "canary"  # left mid-rollout
        served = served_versions(fresh.urls)
        assert sorted(v or 0 for v in served.values()) == sorted(
            [record.to_version, fresh.stable, fresh.stable])
        second = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, timeout=120)
    assert second.returncode == 0, second.stderr.decode()[-2000:]
    result = json.loads(second.stdout.decode().strip().splitlines()[-1])
    assert result["resumed"] is True and result["outcome"] == "promoted"
    assert result["rollout_id"] == record.id
    assert served_versions(fresh.urls) == dict.fromkeys(fresh.urls, record.to_version)
    assert load.stats.failed == 0, load.stats.failures
    published = [fresh.repository.record(MODEL, v).run_id
                 for v in fresh.repository.versions(MODEL)]
    assert published.count("canary-controller-crash") == 1
    kinds = [e.kind for e in store.events(record.id)]
    assert "reconciled" in kinds and "promote" in kinds


def test_tampered_version_is_refused(fresh: Fleet, tmp_path: Path) -> None:
    record = fresh.repository.publish(MODEL, fresh.int8, run_id="tampered")
    onnx = fresh.repository.version_dir(MODEL, record.version) / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    # The controller refuses before touching the fleet...
    with pytest.raises(IntegrityError):
        deploy(DeployRequest(MODEL, fresh.int8, run_id="tampered"), fresh.config("rolling"),
               tmp_path / "state.db")
    assert RolloutStore(tmp_path / "state.db").latest(MODEL) is None
    # ...and a replica asked directly refuses too, and keeps serving the old version.
    client = FleetClient(fresh.urls[:1])
    with pytest.raises(ReplicaRejectedError, match="sha256"):
        client.replicas[0].load(MODEL, triton_config(MODEL, record.task, record.version))
    answer = client.replicas[0].infer_text(MODEL, ["the screen is bright and crisp"])
    client.close()
    assert answer.model_version == str(fresh.stable)
    assert served_versions(fresh.urls) == dict.fromkeys(fresh.urls, fresh.stable)


def test_version_a_replica_cannot_load_is_rolled_back(fresh: Fleet, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(fresh.fp32, broken)
    (broken / "model.onnx").write_bytes(b"not an onnx graph")  # sums match; the graph does not
    (broken / "artifact.json").unlink(missing_ok=True)
    with fresh.load(kafka=False) as load:
        result = deploy(DeployRequest(MODEL, broken, run_id="broken-graph"),
                        fresh.config("rolling"), tmp_path / "state.db")
    assert result.outcome == "rolled_back" and "failed to load" in (result.reason or "")
    assert served_versions(fresh.urls) == dict.fromkeys(fresh.urls, fresh.stable)
    assert load.stats.failed == 0, load.stats.failures


def test_a_deploy_with_a_stale_fence_publishes_nothing_and_touches_no_replica(
        fresh: Fleet, tmp_path: Path) -> None:
    from daemon.act.runs import ActionRun, RunState
    from daemon.act.store import StaleLeaseError, StateStore

    state = tmp_path / "state.db"
    store = StateStore(state)
    store.create_run(ActionRun(id="fenced", model=MODEL, pipeline="p", source="manual",
                               mode="auto", state=RunState.RUNNING, steps=()), actor="test")
    stale = store.acquire_lease("fenced", "a", ttl_s=30)
    assert stale is not None
    # The instance that held the run stalled; another took the run over (its lease lapsed).
    assert store.acquire_lease("fenced", "b", ttl_s=30, force=True) is not None
    store.close()
    versions = fresh.repository.versions(MODEL)
    with pytest.raises(StaleLeaseError, match="stale"):
        deploy(DeployRequest(MODEL, fresh.int8, run_id="fenced"), fresh.config("rolling"),
               state, fence=stale)
    assert fresh.repository.versions(MODEL) == versions, "nothing published"
    assert RolloutStore(state).latest(MODEL) is None
    assert served_versions(fresh.urls) == dict.fromkeys(fresh.urls, fresh.stable)
