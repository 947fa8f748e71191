"""Direct mode on a real broker: the events and labels the simulator writes, read back and
checked against its own plan (schema, request ids, label delay, coverage, the shift at T)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from daemon.cli import app
from daemon.events import FeedbackEvent, InferenceEvent, decode
from daemon.ingest.broker import ensure_topics
from simulator.corpus import BASE_DOMAIN, SHIFT_DOMAIN
from simulator.drivers import DirectConfig, SyntheticModel
from simulator.errors import SimulatorRunError
from simulator.runner import Simulator
from simulator.scenarios import ScenarioConfig

if TYPE_CHECKING:
    from daemon.ingest.broker import LocalBroker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "sentiment"


def read_topic(bootstrap: str, topic: str, expected: int,
               timeout_s: float = 20.0) -> list[tuple[bytes, InferenceEvent | FeedbackEvent]]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False)
    out: list[tuple[bytes, InferenceEvent | FeedbackEvent]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                out.extend((message.key, decode(message.value)) for message in batch)
        # Anything beyond the expected count (duplicates) must show up too.
        for batch in consumer.poll(timeout_ms=300).values():
            out.extend((message.key, decode(message.value)) for message in batch)
    finally:
        consumer.close()
    return out


@pytest.fixture(scope="module")
def abrupt_run(broker: LocalBroker) -> tuple[Simulator, list]:
    ensure_topics(broker.bootstrap, {"sim-abrupt": 1})
    config = ScenarioConfig(kind="abrupt-shift", rate=150, duration_s=4.0, shift_at_s=2.0,
                            label_delay_s=0.6, label_jitter_s=0.4, label_coverage=0.7,
                            seed=11, run_tag="abrupt")
    simulator = Simulator(config, DirectConfig(kafka=broker.bootstrap, topic="sim-abrupt"),
                          bucket_s=1.0)
    final = simulator.run()
    messages = read_topic(broker.bootstrap, "sim-abrupt", final.ok + final.labels_sent)
    return simulator, messages


def test_events_and_feedback_arrive_with_the_contract_and_matching_ids(
        abrupt_run: tuple[Simulator, list]) -> None:
    simulator, messages = abrupt_run
    final = simulator.snapshot()
    assert final.done and final.error is None
    assert final.sent == final.ok == final.planned == 600 and final.failed == 0
    assert {key for key, _ in messages} == {MODEL.encode()}
    inferences = {e.request_id: e for _, e in messages if isinstance(e, InferenceEvent)}
    feedback = {e.request_id: e for _, e in messages if isinstance(e, FeedbackEvent)}
    assert len(inferences) + len(feedback) == len(messages)  # no duplicates either
    plans = {p.request_id: p for p in map(simulator.scenario.plan, range(600))}
    assert set(inferences) == set(plans)
    assert set(feedback) <= set(inferences)
    assert len(feedback) == final.labels_sent == final.labels_scheduled
    for request_id, event in inferences.items():
        plan = plans[request_id]
        assert event.model == MODEL and event.status == "ok" and event.output is not None
        assert event.input == {"text": plan.text}
        assert event.latency_ms == plan.latency_ms
        assert event.output.label in ("negative", "positive")
    for request_id, label in feedback.items():
        assert label.label == plans[request_id].truth
        assert plans[request_id].labelled


def test_label_delay_is_respected(abrupt_run: tuple[Simulator, list]) -> None:
    simulator, messages = abrupt_run
    sent_at = {e.request_id: e.ts_s for _, e in messages if isinstance(e, InferenceEvent)}
    plans = {p.request_id: p for p in map(simulator.scenario.plan, range(600))}
    for _, event in messages:
        if isinstance(event, FeedbackEvent):
            waited = event.ts_s - sent_at[event.request_id]
            planned = plans[event.request_id].label_delay_s
            # Never early; late by at most the pump's poll and a busy 2-core machine.
            assert planned - 0.01 <= waited <= planned + 1.0, (waited, planned)
            assert 0.59 <= waited <= 2.0


def test_label_coverage_is_within_binomial_bounds(abrupt_run: tuple[Simulator, list]) -> None:
    _, messages = abrupt_run
    labelled = sum(isinstance(e, FeedbackEvent) for _, e in messages)
    assert abs(labelled / 600 - 0.7) < 4 * math.sqrt(0.7 * 0.3 / 600)


def test_the_shift_changes_texts_at_t_and_the_synthetic_model_loses_accuracy(
        abrupt_run: tuple[Simulator, list]) -> None:
    simulator, messages = abrupt_run
    plans = {p.request_id: p for p in map(simulator.scenario.plan, range(600))}
    events = [e for _, e in messages if isinstance(e, InferenceEvent)]
    final = simulator.snapshot()
    assert final.started_at is not None and final.progress == 1.0
    assert final.lag_s < 1.0  # direct sends keep the schedule
    start = final.started_at
    for event in events:
        plan = plans[event.request_id]
        assert plan.review.domain == (SHIFT_DOMAIN if plan.offset_s >= 2.0 else BASE_DOMAIN)
        # Sent on schedule: no event before its due time, none far behind it.
        assert plan.offset_s - 0.01 <= event.ts_s - start <= plan.offset_s + 1.0
    assert final.shifted_sent == 300
    pre, post = final.accuracy("pre"), final.accuracy("post")
    assert pre is not None and post is not None
    assert pre > 0.85 and post < 0.72 and pre - post > 0.15
    assert {p.version for p in final.timeline} == {"1"}
    assert sum(p.answered for p in final.timeline) == 600


def test_recovered_version_shows_up_per_phase_and_version(broker: LocalBroker) -> None:
    ensure_topics(broker.bootstrap, {"sim-recover": 1})
    config = ScenarioConfig(kind="concept-drift", rate=200, duration_s=3.0, shift_at_s=1.0,
                            label_coverage=0.0, seed=5)
    model = SyntheticModel(recover_at_s=2.0, accuracy={BASE_DOMAIN: 0.9})
    final = Simulator(config, DirectConfig(kafka=broker.bootstrap, topic="sim-recover",
                                           model=model)).run()
    assert final.labels_scheduled == final.labels_sent == 0
    during, after = final.accuracy("post", "1"), final.accuracy("post", "2")
    assert during is not None and after is not None
    assert final.by_phase_version["post"]["1"].answered == 200
    assert final.by_phase_version["post"]["2"].answered == 200
    assert after - during > 0.15


def test_stop_ends_early_and_accounts_for_every_label(broker: LocalBroker) -> None:
    ensure_topics(broker.bootstrap, {"sim-stop": 1})
    config = ScenarioConfig(rate=100, duration_s=60.0, label_delay_s=30.0, seed=2)
    simulator = Simulator(config, DirectConfig(kafka=broker.bootstrap, topic="sim-stop"))
    simulator.start()
    time.sleep(1.0)
    final = simulator.stop(timeout_s=15)
    assert final.done and simulator.done
    assert 30 <= final.sent < 600
    assert final.labels_sent == 0  # none was due yet
    assert final.labels_abandoned == final.labels_scheduled > 0
    assert final.labels_pending == 0 and final.in_flight == 0


def test_unreachable_broker_is_a_run_error() -> None:
    config = ScenarioConfig(rate=10, duration_s=1.0)
    with pytest.raises(SimulatorRunError):
        Simulator(config, DirectConfig(kafka="127.0.0.1:9", connect_timeout_s=1.0)).run()


def test_cli_direct_mode_writes_events_and_the_stats_file(broker: LocalBroker,
                                                          tmp_path: Path) -> None:
    ensure_topics(broker.bootstrap, {"sim-cli": 1})
    stats_file = tmp_path / "stats.json"
    result = CliRunner().invoke(app, [
        "simulate", "--scenario", "gradual-shift", "--rate", "100", "--duration", "3",
        "--shift-at", "1", "--ramp", "1", "--kafka", broker.bootstrap, "--topic", "sim-cli",
        "--label-delay", "0.2", "--label-jitter", "0.1", "--label-coverage", "0.5",
        "--seed", "1", "--quiet", "--json", str(stats_file)])
    assert result.exit_code == 0, result.output
    stats = json.loads(stats_file.read_text())
    assert stats["sent"] == stats["ok"] == 300 and stats["done"]
    assert set(stats["by_phase"]) == {"pre", "ramp", "post"}
    messages = read_topic(broker.bootstrap, "sim-cli", 300 + stats["labels_sent"])
    assert sum(isinstance(e, InferenceEvent) for _, e in messages) == 300
    assert sum(isinstance(e, FeedbackEvent) for _, e in messages) == stats["labels_sent"] > 100
    bad = CliRunner().invoke(app, ["simulate", "--scenario", "sideways", "--kafka", "x:1"])
    assert bad.exit_code == 2 and "bad settings" in bad.output


def test_cli_stops_cleanly_on_sigterm(broker: LocalBroker, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    ensure_topics(broker.bootstrap, {"sim-term": 1})
    stats_file = tmp_path / "stats.json"
    process = subprocess.Popen(
        [sys.executable, "-c", "from daemon.cli import main; main()", "simulate",
         "--rate", "50", "--duration", "600", "--kafka", broker.bootstrap, "--topic",
         "sim-term", "--label-delay", "60", "--quiet", "--json", str(stats_file)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not read_topic(broker.bootstrap, "sim-term", 1, timeout_s=1):
        assert time.monotonic() < deadline and process.poll() is None
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output.decode()
    stats = json.loads(stats_file.read_text())
    assert stats["done"] and 0 < stats["sent"] < 30_000 and stats["in_flight"] == 0
    assert stats["labels_abandoned"] == stats["labels_scheduled"] > 0
