"""The streaming label join: FeedbackEvents matched to their InferenceEvent by request_id.

Feedback may come hours late, before its inference, twice, or never. Both waiting rooms are
insertion-ordered and capped, and expire by event time, so memory is bounded by the caps and
what leaves unjoined is counted (expired: no label came; orphaned: no inference came).
Feedback in parts (a thumbs-down now, the corrected reference later) joins part by part: a
second feedback that adds a field the first lacked is merged, one that adds nothing is a
duplicate (the first value wins).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import msgspec

from daemon.events import FeedbackEvent
from daemon.monitor.config import LabelJoinConfig


@dataclass(slots=True)
class JoinCounts:
    joined: int = 0
    expired: int = 0  # inferences whose label never came within the TTL
    orphaned: int = 0  # feedback whose inference never came within the early TTL
    duplicate: int = 0  # a second label for a request already joined
    dropped: dict[str, int] = field(default_factory=lambda: {"inference": 0, "feedback": 0})


@dataclass(slots=True)
class Pending:
    version: str
    ts: float
    joined: bool = False
    parts: frozenset[str] = frozenset()  # the feedback fields joined so far


def parts_of(feedback: FeedbackEvent) -> frozenset[str]:
    """Which of label, reference and rating a feedback carries."""
    return frozenset(name for name, value in (("label", feedback.label),
                                              ("reference", feedback.reference),
                                              ("rating", feedback.rating)) if value is not None)


def merged(first: FeedbackEvent, then: FeedbackEvent) -> FeedbackEvent:
    """``first`` with the fields it lacks taken from ``then``."""
    return msgspec.structs.replace(
        first, label=first.label if first.label is not None else then.label,
        reference=first.reference if first.reference is not None else then.reference,
        rating=first.rating if first.rating is not None else then.rating)


class LabelJoin:
    """One model's join. ``on_inference`` and ``on_feedback`` return what joined, if anything."""

    def __init__(self, config: LabelJoinConfig) -> None:
        self.config = config
        self.counts = JoinCounts()
        # Inferences by arrival (close to event time); joined ones stay to spot duplicates.
        self._pending: OrderedDict[str, Pending] = OrderedDict()
        self._early: OrderedDict[str, FeedbackEvent] = OrderedDict()
        self._now = 0.0

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def early(self) -> int:
        return len(self._early)

    def on_inference(self, request_id: str, version: str, ts: float) -> FeedbackEvent | None:
        """Register an inference; returns its feedback if that arrived first."""
        self._advance(ts)
        feedback = self._early.pop(request_id, None)
        if feedback is not None:
            self.counts.joined += 1
            self._remember(request_id, Pending(version, ts, True, parts_of(feedback)))
            return feedback
        if request_id not in self._pending:  # else a redelivery (at-least-once): ignore
            self._remember(request_id, Pending(version, ts))
        return None

    def on_feedback(self, feedback: FeedbackEvent) -> Pending | None:
        """Register feedback; returns the inference it joins (or adds a part to), if that is
        known."""
        self._advance(feedback.ts_s)
        rid = feedback.request_id
        parts = parts_of(feedback)
        pending = self._pending.get(rid)
        if pending is not None:
            if pending.joined:
                if parts <= pending.parts:
                    self.counts.duplicate += 1
                    return None
                pending.parts |= parts  # a new part: the caller merges it into the row
                return pending
            pending.joined = True
            pending.parts = parts
            self.counts.joined += 1
            return pending
        early = self._early.get(rid)
        if early is not None:
            if parts <= parts_of(early):
                self.counts.duplicate += 1
            else:
                self._early[rid] = merged(early, feedback)
            return None
        if len(self._early) >= self.config.max_early:
            self._early.popitem(last=False)
            self.counts.dropped["feedback"] += 1
        self._early[rid] = feedback
        return None

    def _remember(self, request_id: str, pending: Pending) -> None:
        if len(self._pending) >= self.config.max_pending:
            _, old = self._pending.popitem(last=False)
            if not old.joined:
                self.counts.dropped["inference"] += 1
        self._pending[request_id] = pending

    def _advance(self, ts: float) -> None:
        """Expire by event time: stream time is the newest timestamp seen."""
        if ts <= self._now:
            return
        self._now = ts
        horizon = ts - self.config.ttl
        while self._pending:
            rid, oldest = next(iter(self._pending.items()))
            if oldest.ts >= horizon:
                break
            del self._pending[rid]
            if not oldest.joined:
                self.counts.expired += 1
        early_horizon = ts - self.config.early_ttl
        while self._early:
            rid, feedback = next(iter(self._early.items()))
            if feedback.ts_s >= early_horizon:
                break
            del self._early[rid]
            self.counts.orphaned += 1
