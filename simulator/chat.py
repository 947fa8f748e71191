"""The ``support`` scenario's run: chats sent to the replicas' OpenAI endpoint (streamed, so the
replicas log a TTFT), each answer scored against its known correct one (ROUGE-L, the ground
truth), and late feedback (a corrected reference, a thumb) sent to Kafka as FeedbackEvents."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from daemon.events import FeedbackEvent, encode
from lifeguard.config import StrictModel
from lifeguard.scores import reference_scores
from simulator.drivers import close_producer, make_producer
from simulator.errors import RequestFailedError, SimulatorRunError
from simulator.support import PlannedChat, SupportScenario, SupportScenarioConfig

_POLL_S = 0.05


class ChatDriverConfig(StrictModel):
    """Where chats go: replica URLs (round-robin) and the broker for feedback. ``endpoint``:
    ``completions`` sends the prompt exactly as the chat endpoint renders it (so a retrain's
    snapshot holds the prompt the replica served); ``chat`` sends ``messages``."""

    urls: list[str] = Field(min_length=1)
    kafka: str | None = None
    topic: str = Field(default="inference", min_length=1)
    endpoint: Literal["completions", "chat"] = "completions"
    concurrency: int = Field(default=4, ge=1)
    timeout_s: float = Field(default=30.0, gt=0)


@dataclass
class ChatPoint:
    """One time bucket of one serving version: answers, their summed ground-truth score, and
    summed TTFT (ms, measured by the client from send to the first streamed token)."""

    t_s: float
    version: str
    answered: int = 0
    score_sum: float = 0.0
    ttft_sum_ms: float = 0.0

    @property
    def quality(self) -> float:
        return self.score_sum / self.answered if self.answered else float("nan")


@dataclass
class ChatStats:
    planned: int
    bucket_s: float = 5.0
    sent: int = 0
    failed: int = 0
    feedback_sent: int = 0
    failures: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    points: dict[tuple[float, str], ChatPoint] = field(default_factory=dict)
    started_monotonic: float | None = None
    done: bool = False
    error: str | None = None

    def add(self, t_s: float, version: str, score: float, ttft_ms: float) -> None:
        bucket = self.bucket_s * int(t_s // self.bucket_s)
        point = self.points.setdefault((bucket, version), ChatPoint(bucket, version))
        point.answered += 1
        point.score_sum += score
        point.ttft_sum_ms += ttft_ms

    @property
    def timeline(self) -> list[ChatPoint]:
        return [self.points[k] for k in sorted(self.points)]

    def quality_between(self, start_s: float, end_s: float | None) -> float | None:
        """Mean ground-truth score of the answers in [start_s, end_s) of scenario time."""
        n, total = 0, 0.0
        for point in self.points.values():
            if point.t_s >= start_s and (end_s is None or point.t_s < end_s):
                n += point.answered
                total += point.score_sum
        return total / n if n else None


async def _read_stream(response: Any, started: float) -> tuple[str, float | None]:
    """The streamed answer's text and the client's TTFT in ms (None if nothing came)."""
    text, first = "", None
    async for line in response.aiter_lines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        for choice in json.loads(line[6:]).get("choices", []):
            piece = choice.get("text") or (choice.get("delta") or {}).get("content") or ""
            if piece:
                first = first or time.perf_counter()
                text += piece
    return text, None if first is None else (first - started) * 1000


class ChatSimulator:
    """Runs one support scenario in a background thread: ``start()``, ``stats`` (live),
    ``wait()``, ``stop()``. Feedback still waiting at the natural end is sent when due."""

    def __init__(self, config: SupportScenarioConfig, driver: ChatDriverConfig,
                 bucket_s: float = 5.0) -> None:
        self.scenario = SupportScenario(config)
        self.config = config
        self.driver = driver
        self.stats = ChatStats(planned=self.scenario.n_requests, bucket_s=bucket_s)
        self.error: SimulatorRunError | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._feedback: list[tuple[float, int, FeedbackEvent]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def start(self) -> ChatSimulator:
        self._thread = threading.Thread(target=self._main, name="chat-simulator", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout_s: float | None = None) -> bool:
        return self._done.wait(timeout_s)

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        self.wait(timeout_s)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except Exception as exc:  # surfaced through ``error`` and the stats, not swallowed
            self.error = SimulatorRunError(f"simulation stopped: {exc!r}")
            self.stats.error = repr(exc)
        finally:
            self.stats.done = True
            self._done.set()

    async def _run(self) -> None:
        import httpx

        cfg = self.driver
        producer = (await asyncio.to_thread(make_producer, cfg.kafka) if cfg.kafka else None)
        limits = httpx.Limits(max_connections=cfg.concurrency)
        async with httpx.AsyncClient(timeout=cfg.timeout_s, limits=limits) as client:
            sending_done = asyncio.Event()
            pump = asyncio.create_task(self._pump(producer, sending_done))
            try:
                await self._send_all(client)
            finally:
                sending_done.set()
                await pump
        if producer is not None:
            await asyncio.to_thread(close_producer, producer, 6.0)

    async def _send_all(self, client: Any) -> None:
        slots = asyncio.Semaphore(self.driver.concurrency)
        start = self.stats.started_monotonic = time.monotonic()
        tasks: set[asyncio.Task[None]] = set()
        for index in range(self.scenario.n_requests):
            chat = self.scenario.plan(index)
            while not self._stop.is_set() and time.monotonic() < start + chat.offset_s:
                await asyncio.sleep(min(_POLL_S, start + chat.offset_s - time.monotonic()))
            if self._stop.is_set():
                break
            await slots.acquire()
            task = asyncio.create_task(self._one(client, chat, slots, start))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)

    def _body(self, chat: PlannedChat) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.config.model, "max_tokens": self.config.max_tokens,
                                "temperature": 0.0, "stream": True}
        if self.driver.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": chat.exchange.question}]
        else:
            body["prompt"] = chat.exchange.prompt
        return body

    async def _one(self, client: Any, chat: PlannedChat, slots: asyncio.Semaphore,
                   start: float) -> None:
        import httpx

        urls = self.driver.urls
        url = urls[chat.index % len(urls)].rstrip("/") + (
            "/v1/chat/completions" if self.driver.endpoint == "chat" else "/v1/completions")
        self.stats.sent += 1
        try:
            started = time.perf_counter()
            async with client.stream("POST", url, json=self._body(chat),
                                     headers={"x-request-id": chat.request_id}) as response:
                if response.status_code != 200:
                    raise RequestFailedError(f"http_{response.status_code}")
                version = response.headers.get("x-model-version", "?")
                text, ttft_ms = await _read_stream(response, started)
        except (RequestFailedError, httpx.HTTPError, ValueError) as exc:
            self.stats.failed += 1
            self.stats.failures[getattr(exc, "reason", type(exc).__name__)] += 1
            return
        finally:
            slots.release()
        score = reference_scores([text], [chat.exchange.answer], "rougeL")[0]
        self.stats.add(chat.offset_s, version, float(score), ttft_ms or 0.0)
        if chat.give_reference or chat.give_rating:
            event = FeedbackEvent(
                request_id=chat.request_id, ts=time.time() * 1000, model=self.config.model,
                reference=chat.exchange.answer if chat.give_reference else None,
                rating=(1.0 if score >= self.config.good_score else 0.0)
                if chat.give_rating else None)
            heapq.heappush(self._feedback, (time.monotonic() + chat.feedback_delay_s,
                                            next(self._seq), event))

    async def _pump(self, producer: Any, sending_done: asyncio.Event) -> None:
        while True:
            now = time.monotonic()
            while self._feedback and self._feedback[0][0] <= now:
                event = heapq.heappop(self._feedback)[2]
                if producer is not None:
                    producer.send(self.driver.topic, key=self.config.model.encode(),
                                  value=encode(event))
                    self.stats.feedback_sent += 1
            if sending_done.is_set() and (not self._feedback or self._stop.is_set()):
                return
            await asyncio.sleep(_POLL_S)
