"""Byte budgets per model, not only per event: a producer of large texts keeps a model's
windows within ``window.max_bytes`` and its label join within ``labels.max_bytes``; the
oldest goes first and everything dropped is counted."""

from __future__ import annotations

import random
import tracemalloc

from prometheus_client import CollectorRegistry, generate_latest

from daemon.events import FeedbackEvent, InferenceEvent, Output
from daemon.ingest.batch import PartitionBatch
from daemon.monitor.config import LabelJoinConfig, ReferenceConfig, WindowConfig
from daemon.monitor.labels import LabelJoin
from daemon.monitor.window_store import WindowStore, register
from daemon.monitor.windows import MonitoringSettings

BUDGET = 256 << 10
TEXT = 4096  # kafka.max_text_bytes: the largest text that reaches the windows


def _big(rng: random.Random, i: int, version: str = "1") -> InferenceEvent:
    text = "".join(rng.choices("abcdefgh ", k=TEXT))
    return InferenceEvent(request_id=f"r{i}", ts=i * 10, model="m", model_version=version,
                          latency_ms=5.0, input={"text": text},
                          output=Output(label="positive", text=text[::-1]))


def test_a_producer_of_large_texts_keeps_the_window_within_its_budget() -> None:
    settings = MonitoringSettings(WindowConfig(size=5000, max_bytes=BUDGET),
                                  ReferenceConfig(first_n=10),
                                  LabelJoinConfig(max_bytes=64 << 10))
    store = WindowStore(lambda name: settings, settings)
    rng = random.Random(3)
    tracemalloc.start()
    for start in range(0, 2000, 100):
        events = [_big(rng, i, "1" if i % 4 else "2") for i in range(start, start + 100)]
        store.apply(PartitionBatch("t", 0, events, start, start + 99))
        if start == 400:
            held_early, _ = tracemalloc.get_traced_memory()
    held_late, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    windows = store.get("m")
    assert windows is not None
    assert windows.bytes <= BUDGET
    rows = sum(len(r.rows) for r in windows.current.values())
    assert 20 <= rows < 2000 * 0.1  # ~30 rows of ~8 KiB fit; a count cap alone keeps 2000
    assert windows.over_budget == 2000 - rows
    # The newest rows stayed; both versions keep some (the largest window gives way first).
    assert windows.current["1"].rows[-1].request_id == "r1999"
    assert windows.current["2"].rows and windows.current["2"].rows[-1].request_id == "r1996"
    # Real memory stays level as the stream goes on (windows and join both capped).
    assert held_late - held_early < BUDGET
    registry = CollectorRegistry()
    register(store, registry)
    text = generate_latest(registry).decode()
    assert f'lifeguard_window_over_budget_events_total{{model="m"}} {2000 - rows}.0' in text
    assert 'lifeguard_window_bytes{model="m"}' in text


def test_the_label_join_keeps_within_its_budget_and_counts_what_it_drops() -> None:
    join = LabelJoin(LabelJoinConfig(max_bytes=64 << 10, max_early=20_000))
    rng = random.Random(4)
    for i in range(500):  # feedback whose inference never comes, each with a 4 KiB reference
        reference = "".join(rng.choices("xyz ", k=TEXT))
        join.on_feedback(FeedbackEvent(request_id=f"f{i}", ts=1000 + i, model="m",
                                       reference=reference))
    assert join.bytes <= 64 << 10
    assert 0 < join.early < 20 and join.counts.dropped["feedback"] == 500 - join.early
    for i in range(2000):  # inferences awaiting labels, small each: they fit many more
        join.on_inference(f"a-long-request-id-{i:06d}", "1", 2000 + i)
    assert join.bytes <= 64 << 10
    assert join.early == 0  # feedback for requests that never came gave way first (or aged)
    assert join.counts.dropped["feedback"] + join.counts.orphaned == 500
    assert 100 < join.pending < 2000 and join.counts.dropped["inference"] == 2000 - join.pending
