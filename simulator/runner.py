"""The simulator's run: one background thread with an event loop that sends the plan on time
(bounded concurrency), and a bounded delay queue that sends each covered request's true label
as a FeedbackEvent once its delay has passed. Driven by the CLI or by code (start/stop/snapshot).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
import time
from typing import TYPE_CHECKING

from simulator.drivers import (
    DirectConfig,
    DirectDriver,
    Driver,
    DriverConfig,
    KafkaFeedback,
    ReplicaConfig,
    ReplicaDriver,
    close_producer,
    make_producer,
)
from simulator.errors import RequestFailedError, SimulatorConfigError, SimulatorRunError
from simulator.scenarios import PlannedRequest, Scenario, ScenarioConfig
from simulator.stats import LiveStats, SimulatorSnapshot

if TYPE_CHECKING:
    from kafka import KafkaProducer

log = logging.getLogger(__name__)

_POLL_S = 0.05  # how often waiting loops look at the stop flag
_DIRECT_CONCURRENCY = 256  # direct sends only append to the producer's buffer


class LabelQueue:
    """Labels waiting for their delay, earliest first; at most ``capacity`` at once (a full
    queue refuses, and the caller counts the drop)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self._heap: list[tuple[float, int, str, str]] = []
        self._seq = itertools.count()  # ties keep arrival order

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, due: float, request_id: str, label: str) -> bool:
        if len(self._heap) >= self.capacity:
            return False
        heapq.heappush(self._heap, (due, next(self._seq), request_id, label))
        return True

    def pop_due(self, now: float) -> list[tuple[str, str]]:
        out = []
        while self._heap and self._heap[0][0] <= now:
            _, _, request_id, label = heapq.heappop(self._heap)
            out.append((request_id, label))
        return out

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None


class Simulator:
    """Sends one scenario through one driver. ``start()`` runs it in the background,
    ``snapshot()`` reads the live stats, ``wait()`` blocks until it ends, ``stop()`` ends it
    early. At the natural end the labels still waiting are sent when due (``drain_labels``);
    ``stop()`` abandons them unless asked to drain."""

    def __init__(self, scenario: ScenarioConfig | Scenario, driver: DriverConfig, *,
                 bucket_s: float = 5.0, label_queue_size: int = 100_000,
                 drain_labels: bool = True, close_timeout_s: float = 6.0) -> None:
        self.scenario = scenario if isinstance(scenario, Scenario) else Scenario(scenario)
        self.config = self.scenario.config
        self.driver_config = driver
        if self.config.kind == "latency-regression" and isinstance(driver, ReplicaConfig):
            raise SimulatorConfigError(
                "latency-regression changes the latency written in events, so it needs direct "
                "mode; in replica mode the latency is the replica's own, measured for real")
        if bucket_s <= 0:
            raise SimulatorConfigError(f"bucket_s must be positive, got {bucket_s}")
        self.stats = LiveStats(planned=self.scenario.n_requests, bucket_s=bucket_s)
        self.labels = LabelQueue(label_queue_size)
        self.drain_labels = drain_labels
        # Past the producer's delivery timeout: by then every pending record has an outcome.
        self.close_timeout_s = close_timeout_s
        self.error: SimulatorRunError | None = None
        self._stop_sending = threading.Event()
        self._abandon_labels = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifetime ---------------------------------------------------------------------

    def start(self) -> Simulator:
        if self._thread is not None:
            raise RuntimeError("a Simulator runs once; make a new one")
        self._thread = threading.Thread(target=self._thread_main, name="simulator",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, drain_labels: bool = False, timeout_s: float = 30.0) -> SimulatorSnapshot:
        """Stop sending; wait for requests in flight; send or abandon the waiting labels."""
        self._stop_sending.set()
        if not drain_labels:
            self._abandon_labels.set()
        self.wait(timeout_s)
        return self.snapshot()

    def wait(self, timeout_s: float | None = None) -> bool:
        """True once the run is over (planned traffic sent, labels drained or abandoned)."""
        return self._done.wait(timeout_s)

    def run(self) -> SimulatorSnapshot:
        """Start, wait for the end, return the final stats; Ctrl-C stops early. Raises
        ``SimulatorRunError`` if the run could not go on."""
        self.start()
        try:
            while not self.wait(0.2):
                pass
        except KeyboardInterrupt:
            self.stop()
        if self.error is not None:
            raise self.error
        return self.snapshot()

    def snapshot(self) -> SimulatorSnapshot:
        return self.stats.snapshot()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # --- the loop ---------------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
            self.stats.finish()
        except Exception as exc:  # reported through the stats and ``error``, not swallowed
            self.error = SimulatorRunError(f"simulation stopped: {exc!r}")
            self.error.__cause__ = exc
            self.stats.finish(error=repr(exc))
        finally:
            self._done.set()

    async def _main(self) -> None:
        cfg = self.driver_config
        producer: KafkaProducer | None = None
        if cfg.kafka:
            producer = await asyncio.to_thread(make_producer, cfg.kafka, cfg.connect_timeout_s)
        feedback = (KafkaFeedback(producer, cfg.topic, self.config.model, self.stats)
                    if producer is not None else None)
        driver: Driver
        if isinstance(cfg, DirectConfig):
            assert producer is not None  # DirectConfig requires kafka
            driver = DirectDriver(cfg, producer, self.config.model, self.config.seed,
                                  self.stats)
            concurrency = _DIRECT_CONCURRENCY
        else:
            driver = ReplicaDriver(cfg, self.config.model)
            concurrency = cfg.concurrency
        await driver.open()
        start = self.stats.mark_started()
        sending_done = asyncio.Event()
        pump = asyncio.create_task(self._label_pump(feedback, sending_done))
        try:
            await self._send_all(driver, feedback, concurrency, start)
        finally:
            sending_done.set()
            await pump
            await driver.close()
            if producer is not None and not await asyncio.to_thread(
                    close_producer, producer, self.close_timeout_s):
                # The records still pending failed through their errbacks: counted there.
                log.warning("simulator: producer not flushed within %.1fs",
                            self.close_timeout_s)

    async def _send_all(self, driver: Driver, feedback: KafkaFeedback | None,
                        concurrency: int, start: float) -> None:
        slots = asyncio.Semaphore(concurrency)
        in_flight: set[asyncio.Task[None]] = set()
        for index in range(self.scenario.n_requests):
            request = self.scenario.plan(index)
            while not self._stop_sending.is_set():
                wait = start + request.offset_s - time.monotonic()
                if wait <= 0:
                    break
                await asyncio.sleep(min(wait, _POLL_S))
            if self._stop_sending.is_set():
                break
            await slots.acquire()
            self.stats.set_lag(time.monotonic() - start - request.offset_s)
            task = asyncio.create_task(self._one(driver, feedback, request, slots))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.gather(*in_flight)

    async def _one(self, driver: Driver, feedback: KafkaFeedback | None,
                   request: PlannedRequest, slots: asyncio.Semaphore) -> None:
        self.stats.request_sent(shifted=request.review.domain != self.config.base_domain)
        try:
            answer = await driver.send(request)
        except RequestFailedError as exc:
            self.stats.request_failed(exc.reason)
            return
        except Exception as exc:  # a driver bug must not kill the run: count it, say what
            self.stats.request_failed(type(exc).__name__)
            return
        finally:
            slots.release()
        self.stats.answered(request.phase, answer.version, request.offset_s,
                            answer.label == request.truth, answer.latency_ms)
        if feedback is not None and request.labelled:
            due = time.monotonic() + request.label_delay_s
            if self.labels.push(due, request.request_id, request.truth):
                self.stats.count("labels_scheduled")
            else:
                self.stats.count("labels_dropped")

    async def _label_pump(self, feedback: KafkaFeedback | None,
                          sending_done: asyncio.Event) -> None:
        while True:
            if feedback is not None:
                for request_id, label in self.labels.pop_due(time.monotonic()):
                    feedback.send(request_id, label)
            if self._abandon_labels.is_set() or (
                    sending_done.is_set() and not self.drain_labels):
                self.stats.count("labels_abandoned", len(self.labels))
                self.labels = LabelQueue(self.labels.capacity)
            self.stats.set_labels_pending(len(self.labels))
            if sending_done.is_set() and not self.labels:
                return
            await asyncio.sleep(_POLL_S)

