"""What deploy promises at its edges: it imports only its room's dependencies, and its event
log never holds up a request (sampling is per request id, a full queue drops and counts)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from daemon.events import InferenceEvent
from daemon.ingest.broker import free_port
from deploy.emitter import EventEmitter, sampled

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ALLOWED_DAEMON = {"daemon.events"}
FORBIDDEN = ("detectors", "actions")


def test_sampling_is_deterministic_per_request_id() -> None:
    ids = [f"req-{i}" for i in range(20_000)]
    kept = [rid for rid in ids if sampled(rid, 0.1)]
    assert 0.08 < len(kept) / len(ids) < 0.12
    assert kept == [rid for rid in ids if sampled(rid, 0.1)]  # same ids every time
    assert all(sampled(rid, 1.0) for rid in ids[:100])
    assert not any(sampled(rid, 0.0) for rid in ids[:100])


@pytest.mark.slow
def test_emit_never_blocks_on_an_absent_broker() -> None:
    emitter = EventEmitter(f"127.0.0.1:{free_port()}", queue_size=50)  # nothing listens there
    event = InferenceEvent(request_id="r", ts=time.time() * 1000, model="m", model_version="1",
                           latency_ms=1.0)
    for _ in range(5_000):
        emitter.emit(event)
    # Every call returned; what did not fit in the bounded queue was dropped and counted.
    assert emitter.stats.queued <= 50 + 1
    assert emitter.stats.queued + emitter.stats.dropped == 5_000
    pump = emitter._thread
    assert pump is not None
    emitter.close(timeout_s=0.5)
    pump.join(15)  # it gives up on the absent broker instead of retrying per queued event
    assert not pump.is_alive()
    assert emitter.stats.sent == 0
