"""A generator's snapshot, written by the daemon from its windows and read back by the
training step's reader: prompts and chats, answers, references and ratings, and the pairs."""

from __future__ import annotations

from pathlib import Path

from actions.snapshot import generator_pairs, read_snapshot
from daemon.events import ChatMessage, FeedbackEvent, InferenceEvent, Output
from daemon.ingest.batch import PartitionBatch
from daemon.monitor.config import LabelJoinConfig, ReferenceConfig, WindowConfig
from daemon.monitor.snapshots import SnapshotWriter
from daemon.monitor.window_store import WindowStore
from daemon.monitor.windows import MonitoringSettings

SETTINGS = MonitoringSettings(WindowConfig(size=100), ReferenceConfig(first_n=50),
                              LabelJoinConfig())


def _inference(i: int) -> InferenceEvent:
    """Even requests are chats, odd ones plain prompts; every answer is "answer i"."""
    if i % 2 == 0:
        input_: dict = {"messages": [ChatMessage("system", "Be brief."),
                                     ChatMessage("user", f"router {i} blinks")]}
    else:
        input_ = {"prompt": f"Summarise ticket {i}"}
    return InferenceEvent(request_id=f"r{i}", ts=i * 1000, model="support", model_version="1",
                          latency_ms=500.0, ttft_ms=50.0, tokens_out=12, input=input_,
                          output=Output(text=f"answer {i}", finish_reason="stop"))


def test_the_daemon_snapshot_trains_on_references_then_well_rated_answers(
        tmp_path: Path) -> None:
    store = WindowStore(lambda name: SETTINGS, SETTINGS, max_models=2)
    feedback = []
    for i in range(40):
        if i % 4 == 0:  # a corrected answer, rated poorly: the reference is what to learn
            feedback.append(FeedbackEvent(request_id=f"r{i}", ts=50_000, model="support",
                                          reference=f"fixed {i}", rating="down"))
        elif i % 4 == 1:
            feedback.append(FeedbackEvent(request_id=f"r{i}", ts=50_000, model="support",
                                          rating=0.9))
        elif i % 4 == 2:
            feedback.append(FeedbackEvent(request_id=f"r{i}", ts=50_000, model="support",
                                          rating=False))
    events = [_inference(i) for i in range(40)] + feedback
    store.apply(PartitionBatch("t", 0, events, 0, len(events) - 1))
    path = SnapshotWriter(store, tmp_path, min_rows=20)("support")
    assert path is not None

    rows = {r.request_id: r for r in read_snapshot(path)}
    assert len(rows) == 30  # r3, r7, ... had no feedback
    chat = rows["r0"]
    assert chat.messages == (("system", "Be brief."), ("user", "router 0 blinks"))
    assert chat.text == "system: Be brief.\nuser: router 0 blinks"
    assert (chat.output, chat.reference, chat.rating) == ("answer 0", "fixed 0", 0.0)
    prompt = rows["r1"]
    assert prompt.messages is None and prompt.text == "Summarise ticket 1"
    assert (prompt.output, prompt.reference, prompt.rating) == ("answer 1", None, 0.9)

    pairs, skipped = generator_pairs(list(rows.values()))
    targets = [target for _, target in pairs]
    assert targets[:10] == [f"fixed {i}" for i in range(0, 40, 4)]  # references first
    assert targets[10:] == [f"answer {i}" for i in range(1, 40, 4)]  # then well-rated answers
    assert not any(f"answer {i}" in targets for i in range(2, 40, 4))  # poorly rated: never
    assert skipped == 10
    assert ("Summarise ticket 1", "answer 1") in pairs
