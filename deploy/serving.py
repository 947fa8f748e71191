"""The replica's models: one served version per model name, loaded from the repository after
its sums check out, warmed, then swapped in by one reference assignment — requests already
running finish on the old session, and a failed load leaves the old version serving."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np

from deploy.batching import MicroBatcher
from deploy.errors import DeployError
from deploy.repository import ModelRepository, parse_version, validate_model_name

Device = Literal["auto", "cpu", "cuda"]
T = TypeVar("T")


class ServingError(DeployError):
    """A request the replica cannot serve as asked (unknown model, wrong version, bad input)."""


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: int
    task: str
    model: Any  # deploy.inference.OnnxClassifier | OnnxCausalLM
    loaded_at: float

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(getattr(self.model, "labels", ()))


@dataclass(frozen=True)
class Prediction:
    """One answer, with the version that produced it (a swap may happen between requests)."""

    version: int
    label: str | None = None
    score: float | None = None
    text: str | None = None


@dataclass(frozen=True)
class _Item:
    text: str
    max_new_tokens: int


class ModelServer:
    """Loads, swaps and runs models; all model calls run on worker threads (ORT frees the GIL)."""

    def __init__(self, repository: ModelRepository, device: Device = "auto", threads: int = 1,
                 workers: int = 1, max_batch: int = 16, max_wait_s: float = 0.0,
                 on_batch: Callable[[int], None] | None = None) -> None:
        if threads < 1 or workers < 1 or max_batch < 1 or max_wait_s < 0:
            raise ValueError("threads, workers and max_batch must be >= 1; max_wait_s >= 0")
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
        self.repository = repository
        self.device = device
        self.threads = threads
        self.loaded: dict[str, LoadedModel] = {}
        self._workers = workers
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="infer")
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="load")
        self._locks: dict[str, asyncio.Lock] = {}
        self._batchers: dict[str, MicroBatcher[_Item, Prediction]] = {}

    def get(self, name: str, version: int | None = None) -> LoadedModel:
        slot = self.loaded.get(name)
        if slot is None:
            raise ServingError(f"model '{name}' is not loaded")
        if version is not None and slot.version != version:
            raise ServingError(f"model '{name}' version {version} is not loaded "
                               f"(serving {slot.version})")
        return slot

    async def load(self, name: str, version: int | str | None = None) -> LoadedModel:
        """Load ``version`` (default: the latest) and swap it in; raise and keep the old one
        serving when anything fails (tampered files, a broken graph, a failing warm-up)."""
        validate_model_name(name)
        async with self._locks.setdefault(name, asyncio.Lock()):
            if version is None:
                latest = self.repository.serving_version(name)
                if latest is None:
                    raise ServingError(f"model '{name}' has no version to serve in the "
                                       "repository (none, or all withdrawn)")
                version = latest
            number = parse_version(version)
            withdrawn = self.repository.withdrawn(name)
            if number in withdrawn:
                raise ServingError(f"model '{name}' version {number} was withdrawn: "
                                   f"{withdrawn[number]}")
            current = self.loaded.get(name)
            if current is not None and current.version == number:
                return current
            loop = asyncio.get_running_loop()
            slot = await loop.run_in_executor(self._loader, self._load_blocking, name, number)
            self.loaded[name] = slot  # the swap: one assignment, atomic for every reader
            return slot

    def unload(self, name: str) -> None:
        self.get(name)
        del self.loaded[name]

    async def predict(self, name: str, text: str, version: int | None = None,
                      max_new_tokens: int = 16) -> Prediction:
        slot = self.get(name, version)
        if version is not None:
            # Pinned: run on the slot it asked for, even if a swap lands while it waits.
            loop = asyncio.get_running_loop()
            answers = await loop.run_in_executor(self._pool, _run_slot, slot,
                                                 [_Item(text, max_new_tokens)])
            return answers[0]
        batcher = self._batchers.get(name)
        if batcher is None:
            batcher = MicroBatcher(lambda items: self._run_batch(name, items), self._pool,
                                   self._max_batch, self._max_wait_s, self._workers,
                                   self._on_batch)
            self._batchers[name] = batcher
        return await batcher.submit(_Item(text, max_new_tokens))

    async def run_tensors(self, name: str, input_ids: np.ndarray, attention_mask: np.ndarray,
                          version: int | None = None) -> tuple[int, np.ndarray]:
        """Triton's tensor path: token ids in, logits out (no tokenizer involved)."""
        slot = self.get(name, version)
        loop = asyncio.get_running_loop()
        logits = await loop.run_in_executor(self._pool, slot.model.run, input_ids, attention_mask)
        return slot.version, logits

    async def in_pool(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the inference threads (a streamed generation's steps take turns
        there with the micro-batches)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def close(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._loader.shutdown(wait=False, cancel_futures=True)

    def _load_blocking(self, name: str, version: int) -> LoadedModel:
        from deploy.inference import load_onnx

        record = self.repository.verify(name, version)  # sums first: never load a tampered file
        model = load_onnx(self.repository.version_dir(name, version), self.device, self.threads)
        slot = LoadedModel(name, version, record.task, model, time.time())
        _run_slot(slot, [_Item("warm up", 1)])  # a broken graph fails here, not on traffic
        return slot

    def _run_batch(self, name: str, items: Sequence[_Item]) -> list[Prediction]:
        slot = self.loaded.get(name)  # read at run time: queued requests go to the new version
        if slot is None:
            raise ServingError(f"model '{name}' was unloaded")
        return _run_slot(slot, items)


def _run_slot(slot: LoadedModel, items: Sequence[_Item]) -> list[Prediction]:
    if slot.task == "sequence-classification":
        answers = slot.model.predict([i.text for i in items])
        return [Prediction(slot.version, label=label, score=score) for label, score in answers]
    # Generation is batched per max_new_tokens, keeping each answer at its request's index.
    out: list[Prediction | None] = [None] * len(items)
    order = sorted(range(len(items)), key=lambda i: items[i].max_new_tokens)
    for steps, group in itertools.groupby(order, key=lambda i: items[i].max_new_tokens):
        indices = list(group)
        texts = slot.model.generate([items[i].text for i in indices], max_new_tokens=steps)
        for i, text in zip(indices, texts, strict=True):
            out[i] = Prediction(slot.version, text=text)
    return [p for p in out if p is not None]
