"""Triton conformance, checked by Triton's own client: ``tritonclient.http`` against a running
replica (health, model readiness and metadata, repository index, load and unload of a named
version, inference with binary BYTES and INT64 tensors), and every ``config.pbtxt`` the
repository writes parsed into Triton's ``ModelConfig`` and checked against its ONNX graph."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.http as triton
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from deploy.config import FleetConfig, RolloutConfig
from deploy.inference import OnnxCausalLM, OnnxClassifier
from deploy.model_artifact import ModelInfo
from deploy.repository import ModelRepository, triton_config
from deploy.step import DeployRequest, deploy
from harness.replicas import MODEL, ReplicaProcess
from harness.tiny_models import cached_onnx_causal_lm, cached_onnx_classifier

pytestmark = [pytest.mark.integration, pytest.mark.slow]
LM = "writer"
TEXTS = ["the battery is crisp and reliable", "the charger is dead and flimsy", "é ünïcode"]
# Triton's data types (model_config.proto) for the ONNX element types the exports use.
_ONNX_TO_TRITON = {onnx.TensorProto.INT64: model_config_pb2.TYPE_INT64,
                   onnx.TensorProto.FLOAT: model_config_pb2.TYPE_FP32}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[tuple[ReplicaProcess, ModelRepository]]:
    root = tmp_path_factory.mktemp("triton")
    repo = ModelRepository(root / "repo")
    repo.publish(MODEL, cached_onnx_classifier("fp32"), run_id="v1")
    repo.publish(MODEL, cached_onnx_classifier("int8"), run_id="v2")
    repo.publish(LM, cached_onnx_causal_lm(), run_id="lm1")
    replica = ReplicaProcess(repo.root, "triton", [f"{MODEL}:1", LM], None, root)
    replica.start().wait_ready()
    try:
        yield replica, repo
    finally:
        replica.stop()


@pytest.fixture
def client(served: tuple[ReplicaProcess, ModelRepository],
           ) -> Iterator[triton.InferenceServerClient]:
    replica, _ = served
    with triton.InferenceServerClient(url=f"127.0.0.1:{replica.port}") as connection:
        yield connection


def test_server_and_model_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert "model_repository" in client.get_server_metadata()["extensions"]
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
    assert not client.is_model_ready(MODEL, "2") and not client.is_model_ready("nope")
    meta = client.get_model_metadata(MODEL)
    assert meta["name"] == MODEL and meta["versions"] == ["1"]
    assert {(i["name"], i["datatype"]) for i in meta["inputs"]} == {
        ("input_ids", "INT64"), ("attention_mask", "INT64"), ("text", "BYTES")}
    assert client.get_model_metadata(MODEL, "1") == meta
    with pytest.raises(InferenceServerException, match="not loaded"):
        client.get_model_metadata(MODEL, "2")
    # The served version's config, as Triton's ModelConfig JSON.
    config = json_format.ParseDict(client.get_model_config(MODEL), model_config_pb2.ModelConfig())
    assert config.name == MODEL and list(config.version_policy.specific.versions) == [1]


def test_repository_index(client: triton.InferenceServerClient) -> None:
    index = {(e["name"], e["version"]): e["state"] for e in client.get_model_repository_index()}
    assert index == {(MODEL, "1"): "READY", (MODEL, "2"): "UNAVAILABLE", (LM, "1"): "READY"}


def test_infer_with_binary_bytes_and_int64_tensors(
        client: triton.InferenceServerClient,
        served: tuple[ReplicaProcess, ModelRepository]) -> None:
    _, repo = served
    reference = OnnxClassifier.from_dir(repo.version_dir(MODEL, 1), "cpu", 1)
    expected = reference.predict(TEXTS)
    for binary in (True, False):  # tritonclient's default binary tensors, and plain JSON
        text = triton.InferInput("text", [len(TEXTS)], "BYTES")
        text.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=np.object_),
                                 binary_data=binary)
        result = client.infer(MODEL, [text], model_version="1", request_id=f"bin-{binary}",
                              outputs=[triton.InferRequestedOutput("label", binary_data=binary),
                                       triton.InferRequestedOutput("score", binary_data=binary)])
        labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
        assert labels == [label for label, _ in expected]
        np.testing.assert_allclose(result.as_numpy("score"), [s for _, s in expected],
                                   rtol=1e-5)
        assert result.get_response()["id"] == f"bin-{binary}"
    # Triton's own path: token ids in, logits out; no outputs named means all, binary.
    ids, mask = reference.encode(TEXTS)
    inputs = [triton.InferInput("input_ids", list(ids.shape), "INT64"),
              triton.InferInput("attention_mask", list(mask.shape), "INT64")]
    inputs[0].set_data_from_numpy(ids.astype(np.int64))
    inputs[1].set_data_from_numpy(mask.astype(np.int64))
    logits = client.infer(MODEL, inputs).as_numpy("logits")
    np.testing.assert_allclose(logits, reference.run(ids, mask), rtol=1e-4, atol=1e-5)
    # A generator answers BYTES text, the same as generating in this process.
    prompt = triton.InferInput("text", [1], "BYTES")
    prompt.set_data_from_numpy(np.array([b"the screen"], dtype=np.object_))
    answer = client.infer(LM, [prompt], parameters={"max_new_tokens": 4}).as_numpy("text")
    generated = OnnxCausalLM.from_dir(repo.version_dir(LM, 1), "cpu", 1).generate(
        ["the screen"], max_new_tokens=4)
    assert [a.decode() for a in answer] == generated
    with pytest.raises(InferenceServerException, match="unknown output"):
        client.infer(MODEL, [text], outputs=[triton.InferRequestedOutput("nope")])


def test_load_and_unload_a_named_version(client: triton.InferenceServerClient) -> None:
    def override(version: int) -> str:
        return json.dumps(triton_config(MODEL, "sequence-classification", version))

    client.load_model(MODEL, config=override(2))
    try:
        assert client.is_model_ready(MODEL, "2") and not client.is_model_ready(MODEL, "1")
        assert client.get_model_metadata(MODEL)["versions"] == ["2"]
        with pytest.raises(InferenceServerException, match="failed to load"):
            client.load_model(MODEL, config=override(7))
        assert client.is_model_ready(MODEL, "2")  # a failed load leaves the old one serving
        client.unload_model(MODEL)
        assert not client.is_model_ready(MODEL)
        index = {(e["name"], e["version"]): e["state"]
                 for e in client.get_model_repository_index()}
        assert index[(MODEL, "1")] == index[(MODEL, "2")] == "UNAVAILABLE"
    finally:
        client.load_model(MODEL, config=override(1))
    assert client.is_model_ready(MODEL, "1")


def test_every_config_pbtxt_is_a_triton_model_config(
        served: tuple[ReplicaProcess, ModelRepository]) -> None:
    """What a real Triton in explicit mode would read: each config parses as ModelConfig with
    the onnxruntime backend, and its tensors are the ONNX graph's (names, types, ranks)."""
    _, repo = served
    configs = sorted(Path(repo.root).glob("*/config.pbtxt"))
    assert [c.parent.name for c in configs] == sorted([MODEL, LM])
    for path in configs:
        config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
        name = path.parent.name
        assert config.name == name and config.backend == "onnxruntime"
        assert config.max_batch_size == 0 and config.version_policy.HasField("latest")
        # The load override the rollout sends is the same config in Triton's JSON form.
        kv = ModelInfo.read(repo.version_dir(name, 1)).kv_cache  # the LM's cache tensors
        assert (kv is not None) == (name == LM)
        override = json_format.ParseDict(repo.record(name, 1).triton_config(),
                                         model_config_pb2.ModelConfig())
        assert list(override.input) == list(config.input)
        assert list(override.output) == list(config.output)
        for version in repo.versions(name):
            graph = onnx.load(str(repo.version_dir(name, version) / "model.onnx")).graph
            for declared, actual in ((config.input, graph.input), (config.output, graph.output)):
                assert [(t.name, t.data_type, len(t.dims)) for t in declared] == [
                    (t.name, _ONNX_TO_TRITON[t.type.tensor_type.elem_type],
                     len(t.type.tensor_type.shape.dim)) for t in actual]


def test_a_kv_cache_lm_loads_with_its_cache_tensors_and_answers_a_first_step(
        client: triton.InferenceServerClient,
        served: tuple[ReplicaProcess, ModelRepository]) -> None:
    """The load config of a KV-cache graph must list position ids, past and present tensors
    (Triton's ONNX backend refuses one that does not); a first step with an empty past is
    answered with the same logits as in this process, a later step is refused."""
    _, repo = served
    record = repo.record(LM, 1)
    assert record.kv_cache is not None
    bare = triton_config(LM, "causal-lm", 1)  # without the cache tensors
    with pytest.raises(InferenceServerException, match=r"missing \['past_key_values.0.key'"):
        client.load_model(LM, config=json.dumps(bare))
    client.load_model(LM, config=json.dumps(record.triton_config()))
    assert client.is_model_ready(LM, "1")

    lm = OnnxCausalLM.from_dir(repo.version_dir(LM, 1), "cpu", 1)
    ids = np.asarray([lm.prompt_ids("the screen")], dtype=np.int64)
    layers, heads, head_dim = record.kv_cache

    def step(past_len: int) -> np.ndarray:
        tensors = {"input_ids": ids, "attention_mask": np.ones_like(ids),
                   "position_ids": np.arange(ids.shape[1], dtype=np.int64)[None]}
        tensors |= {f"past_key_values.{i}.{kind}": np.zeros((1, heads, past_len, head_dim),
                                                            dtype=np.float32)
                    for i in range(layers) for kind in ("key", "value")}
        inputs = []
        for name, array in tensors.items():
            tensor = triton.InferInput(name, list(array.shape),
                                       "FP32" if array.dtype == np.float32 else "INT64")
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        return client.infer(LM, inputs).as_numpy("logits")

    np.testing.assert_allclose(step(0), lm.run(ids, np.ones_like(ids)), rtol=1e-4, atol=1e-5)
    with pytest.raises(InferenceServerException, match="must be an empty past"):
        step(2)


def test_a_rolling_deploy_of_a_kv_cache_lm_smokes_every_cache_tensor(
        client: triton.InferenceServerClient,
        served: tuple[ReplicaProcess, ModelRepository], tmp_path: Path) -> None:
    """The rollout's load config and smoke inference name the graph's cache tensors: the
    replica (like Triton) refuses either without them, so a promote shows both carried."""
    replica, repo = served
    config = FleetConfig(replicas=[replica.url], repository=repo.root,
                         rollout=RolloutConfig(strategy="rolling", request_timeout_s=5,
                                               load_timeout_s=60, replica_timeout_s=4))
    request = DeployRequest(LM, cached_onnx_causal_lm(), run_id="lm-rolling")
    result = deploy(request, config, tmp_path / "state.db")
    assert result.outcome == "promoted", result.reason
    assert client.is_model_ready(LM, str(result.version))
    assert repo.record(LM, result.version).kv_cache is not None
