"""The replica's repository API (load / unload) behind the control token, on a real replica
process: an unauthenticated or wrongly authenticated unload is refused and the model keeps
serving; the fleet client, holding the token, is obeyed; an oversized request gets 413."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deploy.errors import ReplicaRejectedError
from deploy.fleet import REPLICA_TOKEN_ENV, FleetClient, ReplicaClient
from deploy.repository import ModelRepository
from harness.replicas import MODEL, ReplicaProcess
from harness.tiny_models import cached_onnx_classifier

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TOKEN = "replica-control-token-42"


@pytest.fixture
def replica(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ReplicaProcess]:
    repo = ModelRepository(tmp_path / "repo")
    repo.publish(MODEL, cached_onnx_classifier("fp32"), run_id="v1")
    monkeypatch.setenv(REPLICA_TOKEN_ENV, TOKEN)  # the replica process inherits it
    process = ReplicaProcess(repo.root, "guarded", [f"{MODEL}:1"], None, tmp_path)
    process.start().wait_ready()
    monkeypatch.delenv(REPLICA_TOKEN_ENV)
    try:
        yield process
    finally:
        process.stop()


def test_an_unauthenticated_unload_is_refused_and_the_fleet_client_is_obeyed(
    replica: ReplicaProcess,
) -> None:
    unload = f"{replica.url}/v2/repository/models/{MODEL}/unload"
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
        r = httpx.post(unload, headers=headers)
        assert r.status_code == 401, r.text
    r = httpx.post(f"{replica.url}/v2/repository/models/{MODEL}/load", json={})
    assert r.status_code == 401
    anonymous = ReplicaClient(replica.url)
    with pytest.raises(ReplicaRejectedError):
        anonymous.unload(MODEL)
    assert anonymous.model_ready(MODEL)  # still serving
    # An oversized request is answered 413 before anything reads it.
    big = httpx.post(f"{replica.url}/v2/models/{MODEL}/text",
                     json={"text": "x" * (5 << 20)}, timeout=30)
    assert big.status_code == 413
    assert anonymous.model_ready(MODEL)
    fleet = FleetClient([replica.url], token=TOKEN)
    try:
        fleet.replicas[0].unload(MODEL)
        assert not anonymous.model_ready(MODEL)
    finally:
        fleet.close()
        anonymous.close()
