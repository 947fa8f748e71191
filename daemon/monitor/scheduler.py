"""When each model's pass runs: due on its interval (an APScheduler interval job per model) or
when enough new events arrived, served least-recently-evaluated first by a few lanes.

Each model is pinned to one lane (its evaluation worker holds that model's window copies);
a lane runs one pass at a time, so a slow model never starves the others. The lag of each
model (seconds since a pass became due and was not yet served) is what /metrics shows.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

IDLE_WAIT_S = 1.0


@dataclass
class Slot:
    """One model's place in the schedule."""

    name: str
    lane: int
    interval: float  # seconds between passes; 0: only when asked
    due_since: float | None = None  # a pass is due and not started since then
    serving_since: float | None = None  # the running pass was due since then
    last_started: float = -math.inf
    running: bool = False


class PassScheduler:
    """Lanes (threads) that call ``run(model)`` for due models, least recently started first.
    APScheduler's ``BackgroundScheduler`` keeps the intervals: its job only marks the model due
    (``request``) and wakes the lanes, so a pass never runs on APScheduler's own threads, and
    a pass still due when the next tick comes is one pass (coalesced), not two."""

    def __init__(self, run: Callable[[str], object], models: dict[str, tuple[float, int]],
                 lanes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._run = run
        self._clock = clock
        self.lanes = lanes
        self.slots = {name: Slot(name, lane, interval)
                      for name, (interval, lane) in models.items()}
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        # The APScheduler BackgroundScheduler holding the interval jobs, while started.
        self.intervals: Any = None

    def start(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        with self._cond:
            self._stopping = False
        intervals = BackgroundScheduler(timezone="UTC")
        for slot in self.slots.values():
            if slot.interval:
                intervals.add_job(self.request, "interval", seconds=slot.interval,
                                  args=[slot.name], id=f"evaluate:{slot.name}",
                                  max_instances=1, coalesce=True, misfire_grace_time=None)
        intervals.start()
        self.intervals = intervals
        self._threads = [threading.Thread(target=self._lane, args=(i,), daemon=True,
                                          name=f"evaluation-lane-{i}")
                         for i in range(self.lanes)]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        if self.intervals is not None:
            self.intervals.shutdown(wait=True)
            self.intervals = None
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()
        self._threads = []

    def request(self, name: str) -> None:
        """A pass of ``name`` is due now: its interval came, or enough new events arrived."""
        with self._cond:
            slot = self.slots.get(name)
            if slot is not None and slot.due_since is None:
                slot.due_since = self._clock()
                self._cond.notify_all()

    def lag(self) -> dict[str, float]:
        """Per model: seconds since its oldest unserved due pass became due (0: none)."""
        now = self._clock()
        with self._cond:
            out = {}
            for slot in self.slots.values():
                since = [t for t in (slot.due_since, slot.serving_since) if t is not None]
                out[slot.name] = max(0.0, now - min(since)) if since else 0.0
            return out

    # -- the lanes --------------------------------------------------------------------------

    def pick(self, lane: int) -> Slot | None:
        """The due, idle model of ``lane`` evaluated least recently (caller holds the lock)."""
        best = None
        for slot in self.slots.values():
            if slot.lane != lane or slot.running:
                continue
            if slot.due_since is not None and (best is None
                                               or slot.last_started < best.last_started):
                best = slot
        return best

    def _lane(self, lane: int) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    slot = self.pick(lane)
                    if slot is not None:
                        now = self._clock()
                        break
                    self._cond.wait(IDLE_WAIT_S)  # request() wakes it
                slot.running = True
                slot.serving_since, slot.due_since = slot.due_since, None
                slot.last_started = now
            try:
                self._run(slot.name)
            except Exception:
                log.exception("evaluation pass of %s failed", slot.name)
            finally:
                with self._cond:
                    slot.running = False
                    slot.serving_since = None
