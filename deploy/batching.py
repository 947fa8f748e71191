"""Micro-batching for the replica: concurrent requests queue up while a batch runs, and the
next batch takes all of them (up to a cap) in one ONNX Runtime call on a worker thread. The
queue is bounded: past ``max_queue`` waiting requests, ``submit`` refuses (the replica's 503)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Generic, TypeVar

from deploy.errors import DeployError

In = TypeVar("In")
Out = TypeVar("Out")


class QueueFull(DeployError):
    """Too many requests already wait for a batch: come back later (HTTP 503, Retry-After)."""

    retry_after_s = 1


class MicroBatcher(Generic[In, Out]):
    """``await submit(x)`` returns ``run([... x ...])[i]``; ``run`` executes on ``executor``.

    ``max_wait_s`` > 0 holds a lone request briefly for company; 0 batches only what already
    waits, which adds no latency at low load and still batches under high load.
    """

    def __init__(self, run: Callable[[Sequence[In]], Sequence[Out]], executor: Executor,
                 max_batch: int = 16, max_wait_s: float = 0.0, workers: int = 1,
                 on_batch: Callable[[int], None] | None = None, max_queue: int = 1024) -> None:
        if max_batch < 1 or workers < 1 or max_wait_s < 0 or max_queue < 1:
            raise ValueError("max_batch, workers and max_queue must be >= 1, max_wait_s >= 0")
        self._run = run
        self._executor = executor
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._workers = workers
        self._on_batch = on_batch
        self._max_queue = max_queue
        self._queue: asyncio.Queue[tuple[In, asyncio.Future[Out]]] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def submit(self, item: In) -> Out:
        if self._queue is None:
            self._start()
        assert self._queue is not None
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((item, future))
        except asyncio.QueueFull:
            raise QueueFull(f"{self._max_queue} requests already wait for a batch") from None
        return await future

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def _start(self) -> None:
        self._queue = asyncio.Queue(self._max_queue)
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self._workers)]

    async def _worker(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self._max_wait_s
            while len(batch) < self._max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            items = [item for item, _ in batch]
            if self._on_batch is not None:
                self._on_batch(len(items))
            try:
                results = await loop.run_in_executor(self._executor, self._run, items)
                if len(results) != len(batch):
                    raise RuntimeError(f"batch of {len(batch)} gave {len(results)} results")
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():  # the client may have gone away
                    future.set_result(result)
