"""A rolled-back version stays withdrawn: the repository records it, config.pbtxt pins the
stable version for Triton, and a real replica started by model name serves the stable one
and refuses to load the withdrawn one."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.errors import ReplicaRejectedError
from deploy.fleet import ReplicaClient
from deploy.repository import ModelRepository, triton_config
from harness.replicas import MODEL, ReplicaProcess
from harness.tiny_models import cached_onnx_classifier

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_restarted_replica_serves_the_stable_version_after_a_rollback(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    repo.publish(MODEL, cached_onnx_classifier("fp32"), run_id="stable")
    canary = repo.publish(MODEL, cached_onnx_classifier("int8"), run_id="canary")
    config = repo.root / MODEL / "config.pbtxt"
    assert "latest: { num_versions: 1 }" in config.read_text()
    # A newer candidate, published but never promoted, is not what a restart should serve.
    newer = repo.publish(MODEL, cached_onnx_classifier("fp32"), run_id="next-candidate")
    repo.withdraw(MODEL, canary.version, "canary: accuracy drop 0.12 > 0.05", stable=1)
    assert repo.withdrawn(MODEL) == {canary.version: "canary: accuracy drop 0.12 > 0.05"}
    assert repo.serving_version(MODEL) == 1 and newer.version == 3
    assert "specific: { versions: [ 1 ] }" in config.read_text()

    replica = ReplicaProcess(repo.root, "restarted", [MODEL], None, tmp_path)
    client = ReplicaClient(replica.url)
    try:
        replica.start().wait_ready()
        assert client.served_version(MODEL) == 1
        with pytest.raises(ReplicaRejectedError, match="withdrawn"):
            client.load(MODEL, triton_config(MODEL, "sequence-classification", canary.version))
        assert client.served_version(MODEL) == 1
    finally:
        client.close()
        replica.stop()
