"""The streaming label join: late, early, duplicate and missing labels, within the caps."""

from __future__ import annotations

import random

import pytest

from daemon.events import FeedbackEvent
from daemon.monitor.config import LabelJoinConfig
from daemon.monitor.labels import LabelJoin


def _fb(rid: str, ts_s: float, label: str = "positive") -> FeedbackEvent:
    return FeedbackEvent(request_id=rid, ts=ts_s * 1000, model="m", label=label)


def test_late_label_joins_within_ttl() -> None:
    join = LabelJoin(LabelJoinConfig(ttl=3600))
    assert join.on_inference("a", "1", 0.0) is None
    pending = join.on_feedback(_fb("a", 1800.0))
    assert pending is not None and pending.version == "1"
    assert join.counts.joined == 1 and join.counts.expired == 0


def test_label_after_ttl_expires_instead_of_joining() -> None:
    join = LabelJoin(LabelJoinConfig(ttl=60, early_ttl=60))
    join.on_inference("a", "1", 0.0)
    join.on_inference("b", "1", 100.0)  # stream time moves on: "a" expires
    assert join.counts.expired == 1
    assert join.on_feedback(_fb("a", 101.0)) is None  # too late: waits as early feedback
    join.on_inference("c", "1", 200.0)
    assert join.counts.orphaned == 1 and join.counts.joined == 0


def test_early_label_waits_for_its_inference() -> None:
    join = LabelJoin(LabelJoinConfig())
    assert join.on_feedback(_fb("a", 10.0, "negative")) is None
    assert join.early == 1
    feedback = join.on_inference("a", "2", 11.0)
    assert feedback is not None and feedback.label == "negative"
    assert join.early == 0 and join.counts.joined == 1


def test_duplicate_labels_count_once() -> None:
    join = LabelJoin(LabelJoinConfig())
    join.on_inference("a", "1", 0.0)
    assert join.on_feedback(_fb("a", 1.0)) is not None
    assert join.on_feedback(_fb("a", 2.0)) is None
    join.on_feedback(_fb("z", 3.0))
    join.on_feedback(_fb("z", 4.0))
    assert join.counts.joined == 1 and join.counts.duplicate == 2


def test_redelivered_inference_does_not_reset_its_wait() -> None:
    join = LabelJoin(LabelJoinConfig(ttl=100))
    join.on_inference("a", "1", 0.0)
    join.on_inference("a", "1", 0.0)
    assert join.pending == 1


@pytest.mark.parametrize("coverage", [0.0, 0.3, 1.0])
def test_memory_stays_within_caps_whatever_the_labels_do(coverage: float) -> None:
    rng = random.Random(7)
    config = LabelJoinConfig(ttl=1e9, early_ttl=1e9, max_pending=1000, max_early=200)
    join = LabelJoin(config)
    for i in range(50_000):
        join.on_inference(f"r{i}", "1", float(i))
        if rng.random() < coverage:
            join.on_feedback(_fb(f"r{i - rng.randrange(2000)}", float(i)))
        if rng.random() < 0.05:
            join.on_feedback(_fb(f"never-{i}", float(i)))  # feedback for unknown requests
        assert join.pending <= config.max_pending and join.early <= config.max_early
    counts = join.counts
    assert counts.dropped["feedback"] > 0
    if coverage == 0.0:
        assert counts.joined == 0 and counts.dropped["inference"] == 50_000 - config.max_pending
    else:
        assert counts.joined > 0


def test_feedback_in_parts_joins_part_by_part() -> None:
    join = LabelJoin(LabelJoinConfig())
    join.on_inference("a", "1", 0.0)
    rated = FeedbackEvent(request_id="a", ts=1000, model="m", rating="down")
    corrected = FeedbackEvent(request_id="a", ts=2000, model="m", reference="the fix")
    assert join.on_feedback(rated) is not None
    pending = join.on_feedback(corrected)  # adds the reference: joins again
    assert pending is not None and pending.parts == {"rating", "reference"}
    assert join.on_feedback(FeedbackEvent(request_id="a", ts=3000, model="m", rating=1.0)) is None
    assert join.counts.joined == 1 and join.counts.duplicate == 1
    # Parts that come before their inference are merged while they wait.
    join.on_feedback(FeedbackEvent(request_id="b", ts=3000, model="m", rating=0.5))
    join.on_feedback(FeedbackEvent(request_id="b", ts=3000, model="m", reference="ok"))
    early = join.on_inference("b", "1", 3.0)
    assert early is not None and (early.rating, early.reference) == (0.5, "ok")


def test_windows_merge_a_late_reference_into_a_rated_row() -> None:
    from daemon.events import InferenceEvent, Output
    from daemon.ingest.batch import PartitionBatch
    from daemon.monitor.config import ReferenceConfig, WindowConfig
    from daemon.monitor.window_store import WindowStore
    from daemon.monitor.windows import MonitoringSettings

    settings = MonitoringSettings(WindowConfig(size=10), ReferenceConfig(first_n=10),
                                  LabelJoinConfig())
    store = WindowStore(lambda name: settings, settings, max_models=1)
    events = [InferenceEvent(request_id="a", ts=0, model="m", model_version="1",
                             latency_ms=1.0, output=Output(text="restart it")),
              FeedbackEvent(request_id="a", ts=1000, model="m", rating="down"),
              FeedbackEvent(request_id="a", ts=2000, model="m", reference="reset it"),
              FeedbackEvent(request_id="a", ts=3000, model="m", rating="up")]
    store.apply(PartitionBatch("t", 0, events, 0, 3))
    windows = store.get("m")
    assert windows is not None
    (_, joined), = windows.labelled_rows()
    assert (joined.label, joined.reference, joined.rating) == (None, "reset it", 0.0)
