"""A producer flooding distinct models and versions at the real daemon: /metrics series and the
process's memory stay within the caps, the excess is dead-lettered and counted, and a retired
version's series leave /metrics."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from procs import DaemonProcess, metric_sum, wait_until
from prometheus_client.parser import text_string_to_metric_families

from daemon.ingest.broker import LocalBroker, ensure_topics
from daemon.monitor.windows import MAX_VERSIONS
from harness.traffic import encoded, inference_record, make_producer, produce

pytestmark = pytest.mark.integration
TOPIC = "flood"
ROUNDS = 2
SERIES_METRICS = ("lifeguard_events_total", "lifeguard_inference_latency_seconds_count")


def _series(text: str, name: str) -> set[tuple[tuple[str, str], ...]]:
    """Label sets of ``name``, the status label left out (one series each for ok and error)."""
    return {tuple(sorted((k, v) for k, v in s.labels.items() if k != "status"))
            for f in text_string_to_metric_families(text) for s in f.samples if s.name == name}


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def caught_up(daemon: DaemonProcess, unknown: int) -> bool:
    text = daemon.metrics()
    return (metric_sum(text, "lifeguard_dead_lettered_messages_total",
                       reason="unknown_model") >= unknown
            and metric_sum(text, "lifeguard_consumer_lag_messages") == 0)


def test_a_flood_of_models_and_versions_stays_within_the_caps(broker: LocalBroker,
                                                              tmp_path: Path) -> None:
    ensure_topics(broker.bootstrap, {TOPIC: 3, f"{TOPIC}.dlq": 1})
    rng = random.Random(3)
    config = {"kafka": {"bootstrap_servers": [broker.bootstrap], "topics": [TOPIC],
                        "group_id": "flood", "dead_letter_topic": f"{TOPIC}.dlq",
                        "max_models": 21, "max_versions": 4, "version_idle": "3s",
                        "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}}
    # No configured model: nothing is evaluated, so no lazy import muddies the memory figure;
    # "sentiment" is admitted first (the first of 21 guests), the flood takes the other 20.
    producer = make_producer(broker.bootstrap)
    with DaemonProcess(tmp_path, config) as daemon:
        assert daemon.proc is not None
        produce(producer, TOPIC, encoded(inference_record(rng, version="1") for _ in range(500)))
        wait_until(lambda: daemon.count("lifeguard_events_total") >= 500, 30)
        rss = []
        for round_ in range(ROUNDS):  # all names new each time: memory must level off
            # 2,500 distinct models, and the configured model in 2,500 distinct versions.
            base = round_ * 2500
            flood = [inference_record(rng, model=f"fake-{base + i}") for i in range(2500)]
            flood += [inference_record(rng, version=f"v{base + i}") for i in range(2500)]
            rng.shuffle(flood)
            produce(producer, TOPIC, encoded(flood))
            wait_until(lambda n=round_: caught_up(daemon, 2500 * (n + 1) - 20), 60, 0.5)
            rss.append(_rss_kib(daemon.proc.pid))
        text = daemon.metrics()

        unknown = metric_sum(text, "lifeguard_dead_lettered_messages_total",
                             reason="unknown_model")
        too_many = metric_sum(text, "lifeguard_dead_lettered_messages_total",
                              reason="too_many_versions")
        retired = metric_sum(text, "lifeguard_retired_versions_total")
        assert unknown == 2500 * ROUNDS - 20  # 21 guests admitted, first come
        # Four versions at a time; one more for each that idled out mid-flood.
        assert too_many >= 2500 * ROUNDS - 4 - retired
        guests = {dict(labels)["model"] for labels in _series(text, "lifeguard_events_total")}
        assert len(guests - {"sentiment"}) == 20
        # 20 guest models with one version each, sentiment with four.
        for name in SERIES_METRICS:
            assert len(_series(text, name)) <= 24, name
        assert len(_series(text, "lifeguard_last_event_age_seconds")) <= 21
        # Windows keep their own least-recently-seen cap of 8 versions per model.
        assert len(_series(text, "lifeguard_window_events")) <= 20 + MAX_VERSIONS
        # Past the first round (warm-up: pools), 5,000 more names each round would cost tens
        # of MiB if anything kept them.
        assert rss[-1] - rss[0] < 16 * 1024, f"RSS grew {rss[-1] - rss[0]} KiB after round 1"

        # Versions idle past version_idle retire, and their series go with them.
        time.sleep(3.5)
        produce(producer, TOPIC, encoded([inference_record(rng, version="2")]))
        wait_until(lambda: _series(daemon.metrics(), "lifeguard_events_total") and any(
            ("version", "2") in labels
            for labels in _series(daemon.metrics(), "lifeguard_events_total")), 20)
        text = daemon.metrics()
        versions = {dict(labels)["version"] for labels in _series(text, "lifeguard_events_total")
                    if ("model", "sentiment") in labels}
        assert "2" in versions and len(versions) <= 4
        assert metric_sum(text, "lifeguard_retired_versions_total") >= 1
    producer.close()
