"""The replica's micro-batch queue is bounded: past ``--max-queue`` waiting requests a real
replica answers 503 with Retry-After, and serves again once the queue drains."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from deploy.batching import MicroBatcher, QueueFull
from deploy.repository import ModelRepository
from harness.replicas import MODEL, ReplicaProcess
from harness.tiny_models import cached_onnx_classifier


def test_the_batcher_refuses_past_its_queue_and_serves_what_it_holds() -> None:
    async def scenario() -> tuple[list[object], list[int]]:
        batches: list[int] = []
        with ThreadPoolExecutor(1) as pool:
            batcher: MicroBatcher[int, int] = MicroBatcher(
                lambda xs: [x * 2 for x in xs], pool, max_batch=2, max_queue=3,
                on_batch=batches.append)
            # All six are submitted before the worker first runs: three wait, three are shed.
            results = await asyncio.gather(*(batcher.submit(i) for i in range(6)),
                                           return_exceptions=True)
            again = await batcher.submit(10)  # drained: accepted again
            await batcher.close()
        return [*results, again], batches

    results, batches = asyncio.run(scenario())
    assert results[:3] == [0, 2, 4]
    assert all(isinstance(r, QueueFull) for r in results[3:6])
    assert results[6] == 20 and batches == [2, 1, 1]


@pytest.mark.integration
def test_a_full_queue_answers_503_with_retry_after(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    repo.publish(MODEL, cached_onnx_classifier("fp32"), run_id="v1")
    replica = ReplicaProcess(repo.root, "queued", [f"{MODEL}:1"], None, tmp_path,
                             extra_args=("--max-queue", "4", "--max-batch", "1"))
    replica.start().wait_ready()
    try:
        infer = f"{replica.url}/v2/models/{MODEL}/infer"

        def texts(n: int) -> dict[str, object]:
            return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [n],
                                "data": [f"review {i}" for i in range(n)]}]}

        # One request's texts enter the queue together: ten cannot wait in a queue of four.
        full = httpx.post(infer, json=texts(10), timeout=30)
        assert full.status_code == 503, full.text
        assert full.headers["retry-after"] == "1" and "overloaded" in full.json()["error"]
        fits = httpx.post(infer, json=texts(4), timeout=30)
        assert fits.status_code == 200, fits.text
        assert len(fits.json()["outputs"][0]["data"]) == 4
        one = httpx.post(f"{replica.url}/v2/models/{MODEL}/text", content=b"fine", timeout=30)
        assert one.status_code == 200 and one.json()["label"] in ("negative", "positive")
    finally:
        replica.stop()
