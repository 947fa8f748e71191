"""Windows: bounded by configuration, references frozen, labels attached, ownership dropped."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, generate_latest

from daemon.events import FeedbackEvent, InferenceEvent, Output
from daemon.ingest.batch import PartitionBatch
from daemon.monitor.config import LabelJoinConfig, ReferenceConfig, WindowConfig
from daemon.monitor.deltas import unpack_columns, unpack_labels
from daemon.monitor.window_store import WindowStore, register
from daemon.monitor.windows import MonitoringSettings

SETTINGS = MonitoringSettings(WindowConfig(size=100, max_age=0), ReferenceConfig(first_n=50),
                              LabelJoinConfig())


def _inference(i: int, version: str = "1", model: str = "m", ts_s: float | None = None,
               text: str = "good screen") -> InferenceEvent:
    return InferenceEvent(request_id=f"r{i}", ts=(ts_s if ts_s is not None else i) * 1000,
                          model=model, model_version=version, latency_ms=10.0 + i % 7,
                          input={"text": text, "tier": "gold" if i % 2 else "free"},
                          output=Output(label="positive", score=0.9))


def _store(settings: MonitoringSettings = SETTINGS) -> WindowStore:
    return WindowStore(lambda name: settings if name == "m" else None, settings, max_models=2)


def _apply(store: WindowStore, events: list, partition: int = 0, replay: bool = False) -> None:
    store.apply(PartitionBatch("t", partition, events, 0, len(events) - 1, replay))


def test_window_is_bounded_and_counts_what_it_evicts() -> None:
    store = _store()
    _apply(store, [_inference(i) for i in range(1000)])
    windows = store.get("m")
    assert windows is not None
    rows = windows.current["1"]
    assert len(rows.rows) == 100 and rows.evicted == 900
    assert [r.request_id for r in rows.rows][:2] == ["r900", "r901"]


def test_reference_freezes_at_first_n_of_each_version() -> None:
    store = _store()
    _apply(store, [_inference(i) for i in range(30)])
    windows = store.get("m")
    assert windows is not None and windows.reference_frame("1") is None  # still filling
    _apply(store, [_inference(i) for i in range(30, 500)])
    reference = windows.reference_frame("1")
    assert reference is not None and list(reference["request_id"]) == [f"r{i}" for i in range(50)]
    _apply(store, [_inference(i, version="2") for i in range(500, 620)])
    second = windows.reference_frame("2")
    assert second is not None and second["request_id"].iloc[0] == "r500"


def test_time_window_ages_out_old_events() -> None:
    settings = MonitoringSettings(WindowConfig(size=10_000, max_age=60), ReferenceConfig(),
                                  LabelJoinConfig())
    store = _store(settings)
    _apply(store, [_inference(i, ts_s=float(i)) for i in range(300)])
    windows = store.get("m")
    assert windows is not None
    windows.age_out()
    frame = windows.current_frame("1")
    assert frame is not None and frame["ts"].min() >= 299 - 60 and len(frame) == 61


def test_labels_join_into_window_and_reference_frames() -> None:
    store = _store()
    events: list = [_inference(i) for i in range(60)]
    early = FeedbackEvent(request_id="r70", ts=60_000, model="m", label="negative")
    late = [FeedbackEvent(request_id=f"r{i}", ts=(100 + i) * 1000, model="m", label="negative")
            for i in range(0, 60, 3)]
    _apply(store, [*events, early, *late, _inference(70)])
    windows = store.get("m")
    assert windows is not None
    frame = windows.current_frame("1")
    assert frame is not None
    labelled = frame[frame["label"].notna()]
    assert set(labelled["request_id"]) == {f"r{i}" for i in range(0, 60, 3)} | {"r70"}
    reference = windows.reference_frame("1")
    assert reference is not None and reference["label"].notna().sum() == 17  # r0..r48 by 3
    assert set(frame.columns) >= {"latency_ms", "status", "input_text", "prediction", "score"}


def test_unknown_models_are_capped_and_counted() -> None:
    store = _store()
    _apply(store, [_inference(i, model=f"other-{i}") for i in range(5)])
    assert len(store.models) == 2 and store.untracked == 3


def test_release_drops_models_of_revoked_partitions() -> None:
    store = _store()
    _apply(store, [_inference(1)], partition=0)
    _apply(store, [_inference(2, model="x")], partition=1)
    store.release([("t", 0)])
    assert store.get("m") is None and store.get("x") is not None


def test_replayed_batches_rebuild_windows_but_mark_them_replaying() -> None:
    store = _store()
    _apply(store, [_inference(i) for i in range(20)], replay=True)
    windows = store.get("m")
    assert windows is not None and windows.replaying and len(windows.current["1"].rows) == 20
    _apply(store, [_inference(i) for i in range(20, 25)])
    assert not windows.replaying


def test_window_metrics_are_exported() -> None:
    store = _store()
    registry = CollectorRegistry()
    register(store, registry)
    rng = random.Random(0)
    _apply(store, [_inference(i) for i in range(300)])
    feedback = [FeedbackEvent(request_id=f"r{i}", ts=300_000, model="m", label="x")
                for i in rng.sample(range(300), 40)]
    _apply(store, feedback)
    text = generate_latest(registry).decode()
    assert 'lifeguard_window_events{model="m",version="1"} 100.0' in text
    assert 'lifeguard_window_evicted_events_total{model="m",version="1"} 200.0' in text
    assert 'lifeguard_labels_joined_total{model="m"} 40.0' in text


def _feedback(i: int, label: str) -> FeedbackEvent:
    return FeedbackEvent(request_id=f"r{i}", ts=i * 1000, model="m", label=label)


def test_pass_delta_cuts_versions_with_enough_rows_and_sends_only_what_changed() -> None:
    store = _store()
    _apply(store, [_inference(i) for i in range(80)] +
           [_inference(i, version="2") for i in range(80, 100)])
    windows = store.get("m")
    assert windows is not None and windows.new_events == 100
    cursors: dict = {}
    cut = windows.pass_delta(min_events=30, cursors=cursors)
    assert cut is not None and windows.new_events == 0
    assert [v.version for v in cut.versions] == ["1"]  # v2: 20 rows and no frozen reference
    assert cut.live == {"1", "2"} and cut.offset == 99
    first = cut.versions[0]
    assert first.reset and len(first.rows) == 80 and first.length == 80
    assert first.reference_size == 50 and first.reference is not None
    # Next time: only the new rows and labels, and no reference (the backend prepared it).
    _apply(store, [_inference(i) for i in range(100, 130)] + [_feedback(110, "negative")])
    again = windows.pass_delta(min_events=30, cursors=cursors)
    assert again is not None
    second = again.versions[0]
    assert not second.reset and second.reference is None and second.length == 100
    assert unpack_columns(second.rows).request_id == [f"r{i}" for i in range(100, 130)]
    assert unpack_labels(second.labels) == [("r110", ("negative", None, None))]
    # A backend that lost its copy (cursors cleared) gets everything again.
    fresh = windows.pass_delta(min_events=30, cursors={})
    assert fresh is not None and fresh.versions[0].reset and len(fresh.versions[0].rows) == 100


def test_rows_since_and_labelled_rows_read_without_internals() -> None:
    store = _store()
    _apply(store, [_inference(i) for i in range(20)] +
           [_feedback(i, "positive" if i % 2 else "negative") for i in range(10, 20)])
    windows = store.get("m")
    assert windows is not None
    recent = windows.rows_since("1", since_s=15)
    assert [r.request_id for r in recent.rows] == [f"r{i}" for i in range(15, 20)]
    assert recent.labels["r15"][0] == "positive"
    labelled = windows.labelled_rows()
    assert sorted(row.request_id for row, _ in labelled) == sorted(f"r{i}" for i in range(10, 20))
    assert windows.rows_since("9", since_s=0).rows == []


def test_window_judge_counts_errors_p95_and_accuracy_from_the_windows() -> None:
    from daemon.monitor.canary import WindowJudge
    from deploy.config import CanaryConfig

    store = _store()
    _apply(store, [_inference(i) for i in range(40)] +
           [_feedback(i, "positive" if i < 30 else "negative") for i in range(40)])
    judge = WindowJudge(store, CanaryConfig())
    stats = judge.stats_of("m", 1, since_s=0)
    assert stats.events == 40 and stats.errors == 0 and stats.labelled == 40
    assert stats.correct == 30  # every prediction is "positive"
    latencies = [10.0 + i % 7 for i in range(40)]
    assert stats.p95_ms is not None and min(latencies) <= stats.p95_ms <= max(latencies)


def test_snapshot_writes_each_labelled_row_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from daemon.monitor.snapshots import SnapshotWriter

    store = _store()
    _apply(store, [_inference(i) for i in range(30)] +
           [_feedback(i, "negative") for i in range(5, 30)] + [_feedback(5, "positive")])
    path = SnapshotWriter(store, tmp_path, min_rows=20)("m")
    assert path is not None and path.parent == tmp_path
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(r["request_id"] for r in rows) == sorted(f"r{i}" for i in range(5, 30))
    assert all(r["text"] == "good screen" and r["label"] == "negative" for r in rows)
    assert SnapshotWriter(store, tmp_path, min_rows=26)("m") is None  # too few labelled rows


def _chat(i: int, answer: str, finish: str = "stop") -> InferenceEvent:
    from daemon.events import ChatMessage

    return InferenceEvent(
        request_id=f"c{i}", ts=i * 1000, model="m", model_version="1", latency_ms=900.0,
        ttft_ms=80.0 + i, tokens_out=30 + i,
        input={"messages": [ChatMessage("system", "Be brief."),
                            ChatMessage("user", f"question {i}"),
                            ChatMessage("assistant", "Which model?"),
                            ChatMessage("user", "the X2")]},
        output=Output(text=answer, finish_reason=finish))


def test_generator_rows_carry_prompt_output_timing_and_feedback_kinds_apart() -> None:
    store = _store()
    _apply(store, [_chat(i, f"answer {i}", "length" if i == 1 else "stop") for i in range(3)] +
           [FeedbackEvent(request_id="c0", ts=5000, model="m", reference="Reset the X2."),
            FeedbackEvent(request_id="c1", ts=5000, model="m", rating="down"),
            FeedbackEvent(request_id="c2", ts=5000, model="m", label="billing")])
    windows = store.get("m")
    assert windows is not None
    frame = windows.current_frame("1")
    assert frame is not None
    assert list(frame["input_text"]) == ["the X2"] * 3  # a chat's last user message
    assert list(frame["output_text"]) == ["answer 0", "answer 1", "answer 2"]
    assert list(frame["finish_reason"]) == ["stop", "length", "stop"]
    assert list(frame["ttft_ms"]) == [80.0, 81.0, 82.0]
    assert list(frame["tokens_out"]) == [30.0, 31.0, 32.0]
    assert list(frame["reference"]) == ["Reset the X2.", None, None]
    assert list(frame["label"]) == [None, None, "billing"]  # a reference is not a label
    assert frame["rating"].tolist()[1] == 0.0
    row, joined = next((r, j) for r, j in windows.labelled_rows() if r.request_id == "c0")
    assert joined.reference == "Reset the X2." and joined.label is None
    assert row.messages is not None and len(row.messages) == 4


def test_a_generators_rows_and_feedback_parts_reach_the_worker_copy_whole() -> None:
    import pandas as pd

    from daemon.events import ChatMessage
    from daemon.monitor.window_copy import WindowCopy, reference_snapshot

    settings = MonitoringSettings(WindowConfig(size=100, max_age=0), ReferenceConfig(first_n=10),
                                  LabelJoinConfig())
    store = WindowStore(lambda name: settings, settings, max_models=2)
    _apply(store, [_chat(i, f"answer {i}", "length" if i == 1 else "stop") for i in range(12)] +
           [FeedbackEvent(request_id="c0", ts=5000, model="m", reference="Reset the X2."),
            FeedbackEvent(request_id="c2", ts=5000, model="m", label="billing")])
    windows = store.get("m")
    assert windows is not None
    cursors: dict = {}
    copy = WindowCopy()
    cut = windows.pass_delta(min_events=10, cursors=cursors)
    assert cut is not None and len(cut.versions) == 1
    delta = cut.versions[0]
    copy.apply(delta)
    assert delta.reference is not None and not isinstance(delta.reference, pd.DataFrame)
    reference = reference_snapshot(delta.reference)
    assert reference.labels["c0"].reference == "Reset the X2."
    # A rating for c0 after its reference: the next delta carries the merged feedback.
    _apply(store, [_chat(12, "answer 12"),
                   FeedbackEvent(request_id="c0", ts=6000, model="m", rating="down")])
    again = windows.pass_delta(min_events=10, cursors=cursors)
    assert again is not None and not again.versions[0].reset
    copy.apply(again.versions[0])
    theirs = copy.snapshot()
    assert theirs.labels["c0"] == (None, "Reset the X2.", 0.0)
    assert theirs.rows[0].messages == _chat(0, "answer 0").messages
    assert all(isinstance(m, ChatMessage) for m in theirs.rows[0].messages or [])
    features = settings.window.features
    ours = windows.current_frame("1")
    assert ours is not None
    pd.testing.assert_frame_equal(theirs.frame(features), ours)
    assert list(ours["finish_reason"]) == ["stop", "length", *["stop"] * 11]
    assert list(ours["ttft_ms"]) == [80.0 + i for i in range(13)]
