"""Replica mode against real ``lifeguard replica`` processes (ONNX Runtime, a real broker): the
replicas' own InferenceEvents carry the simulator's request ids, its FeedbackEvents join them,
round-robin spreads the load, a dead replica's requests are counted as failures, and the
simulator's ground-truth accuracy is exactly what the replicas' logged answers score."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from daemon.events import FeedbackEvent, InferenceEvent
from daemon.ingest.broker import ensure_topics, free_port
from deploy.repository import ModelRepository
from harness.replicas import MODEL, TOPIC, ReplicaProcess
from harness.tiny_models import cached_onnx_classifier
from simulator.drivers import ReplicaConfig
from simulator.runner import Simulator
from simulator.scenarios import ScenarioConfig
from tests.test_simulator_direct import read_topic

if TYPE_CHECKING:
    from daemon.ingest.broker import LocalBroker

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def replicas(broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[list[ReplicaProcess], int]]:
    ensure_topics(broker.bootstrap, {TOPIC: 1})
    root = tmp_path_factory.mktemp("sim-replicas")
    repository = ModelRepository(root / "repo")
    version = repository.publish(MODEL, cached_onnx_classifier("fp32"), run_id="seed").version
    processes = [ReplicaProcess(repository.root, f"replica-{i}", [f"{MODEL}:{version}"],
                                broker.bootstrap, root).start() for i in range(2)]
    try:
        for process in processes:
            process.wait_ready()
        yield processes, version
    finally:
        for process in processes:
            process.stop()


def test_replica_mode_end_to_end(broker: LocalBroker,
                                 replicas: tuple[list[ReplicaProcess], int],
                                 tmp_path: Path) -> None:
    processes, version = replicas
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: every third request fails
    urls = [p.url for p in processes] + [dead]
    config = ScenarioConfig(kind="abrupt-shift", rate=60, duration_s=3.0, shift_at_s=1.5,
                            label_delay_s=0.3, label_jitter_s=0.2, label_coverage=0.6,
                            seed=21, run_tag="replica")
    driver = ReplicaConfig(urls=urls, kafka=broker.bootstrap, topic=TOPIC, concurrency=8,
                           timeout_s=5, connect_timeout_s=5)
    simulator = Simulator(config, driver)
    final = simulator.run()

    plans = {p.request_id: p for p in map(simulator.scenario.plan, range(180))}
    answered = {rid for rid, p in plans.items() if p.index % 3 != 2}
    assert final.sent == 180 and final.ok == 120 and final.failed == 60, final.failures
    assert all(dead in reason and "ConnectError" in reason for reason in final.failures)
    assert set(final.by_phase_version["pre"]) == {str(version)}

    messages = read_topic(broker.bootstrap, TOPIC, 120 + final.labels_sent)
    events = {e.request_id: e for _, e in messages
              if isinstance(e, InferenceEvent) and e.request_id in plans}
    feedback = {e.request_id: e for _, e in messages
                if isinstance(e, FeedbackEvent) and e.request_id in plans}
    # The replicas logged every answered request under the simulator's own request id.
    assert set(events) == answered
    assert Counter(e.replica for e in events.values()) == {"replica-0": 60, "replica-1": 60}
    for request_id, event in events.items():
        assert event.input == {"text": plans[request_id].text}
        assert event.model_version == str(version) and event.status == "ok"
    # Labels: only for answered, covered requests, the true label, after the delay.
    assert set(feedback) <= answered
    assert len(feedback) == final.labels_sent == final.labels_scheduled
    assert all(plans[rid].labelled for rid in feedback)
    for request_id, label in feedback.items():
        assert label.label == plans[request_id].truth
        waited = label.ts_s - events[request_id].ts_s
        assert plans[request_id].label_delay_s - 0.05 <= waited <= 3.0
    # Ground truth as the simulator counts it == the replicas' logged answers, scored.
    for phase in ("pre", "post"):
        in_phase = [rid for rid in events if plans[rid].phase == phase]
        answers = {rid: events[rid].output for rid in in_phase}
        correct = sum(out is not None and out.label == plans[rid].truth
                      for rid, out in answers.items())
        assert final.by_phase[phase].answered == len(in_phase) == 60
        assert final.by_phase[phase].correct == correct
