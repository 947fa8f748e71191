"""One real replica process: the Open Inference Protocol v2 surface, the repository extension,
hot swaps under concurrent load, refused loads, and the InferenceEvents it writes to Kafka."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from daemon.events import InferenceEvent, decode
from daemon.ingest.broker import LocalBroker, ensure_topics
from deploy.errors import ReplicaRejectedError
from deploy.fleet import ReplicaClient
from deploy.inference import OnnxClassifier
from deploy.repository import ModelRepository, triton_config
from harness.replicas import MODEL, REPO_ROOT, TOPIC, ReplicaProcess
from harness.tiny_models import cached_onnx_causal_lm, cached_onnx_classifier

pytestmark = [pytest.mark.integration, pytest.mark.slow]
LM = "writer"


@pytest.fixture(scope="module")
def served(broker: LocalBroker, tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[tuple[ReplicaProcess, ModelRepository]]:
    root = tmp_path_factory.mktemp("replica")
    ensure_topics(broker.bootstrap, {TOPIC: 1})
    repo = ModelRepository(root / "repo")
    repo.publish(MODEL, cached_onnx_classifier("fp32"), run_id="v1")
    repo.publish(MODEL, cached_onnx_classifier("int8"), run_id="v2")
    repo.publish(LM, cached_onnx_causal_lm(), run_id="lm1")  # exported with its KV cache
    replica = ReplicaProcess(repo.root, "solo", [f"{MODEL}:1", LM], broker.bootstrap, root)
    replica.start().wait_ready()
    try:
        yield replica, repo
    finally:
        replica.stop()


def test_health_metadata_and_index(served: tuple[ReplicaProcess, ModelRepository]) -> None:
    replica, _ = served
    client = ReplicaClient(replica.url)
    assert client.live() and client.ready()
    assert client.model_ready(MODEL) and client.model_ready(MODEL, 1)
    assert not client.model_ready(MODEL, 2) and not client.model_ready("nope")
    meta = client.metadata(MODEL)
    assert meta["versions"] == ["1"] and meta["parameters"]["labels"] == ["negative", "positive"]
    assert {i["name"] for i in meta["inputs"]} >= {"input_ids", "attention_mask"}
    index = {(e["name"], e["version"]): e["state"] for e in client.index()}
    assert index == {(MODEL, "1"): "READY", (MODEL, "2"): "UNAVAILABLE", (LM, "1"): "READY"}
    client.close()


def test_text_endpoint_echoes_or_makes_request_ids(
        served: tuple[ReplicaProcess, ModelRepository]) -> None:
    replica, repo = served
    url = f"{replica.url}/v2/models/{MODEL}/text"
    plain = httpx.post(url, content="the battery is crisp and reliable",
                       headers={"x-request-id": "req-plain", "content-type": "text/plain"})
    as_json = httpx.post(url, json={"text": "the charger is dead and flimsy"})
    assert plain.status_code == as_json.status_code == 200
    assert plain.json()["request_id"] == "req-plain"
    made = as_json.json()["request_id"]
    assert len(made) == 32 and as_json.headers["x-request-id"] == made
    # The answers are the model's own: the same texts through ONNX Runtime in this process.
    reference = OnnxClassifier.from_dir(repo.version_dir(MODEL, 1), "cpu", 1).predict(
        ["the battery is crisp and reliable", "the charger is dead and flimsy"])
    got = [(plain.json()["label"], plain.json()["score"]),
           (as_json.json()["label"], as_json.json()["score"])]
    assert [g[0] for g in got] == [r[0] for r in reference]
    assert np.allclose([g[1] for g in got], [r[1] for r in reference], atol=1e-4)
    lm = httpx.post(f"{replica.url}/v2/models/{LM}/text",
                    json={"text": "the battery", "max_new_tokens": 5})
    assert lm.status_code == 200 and isinstance(lm.json()["text"], str)
    assert httpx.post(url + "x", content="x").status_code == 404


def test_v2_infer_text_and_tensor_paths(served: tuple[ReplicaProcess, ModelRepository]) -> None:
    replica, repo = served
    client = ReplicaClient(replica.url)
    texts = ["bright screen, love it", "laggy keyboard, awful", "dim camera"]
    answer = client.infer_text(MODEL, texts, request_id="batch-1")
    assert answer.model_version == "1" and len(answer.outputs["label"]) == 3
    model = OnnxClassifier.from_dir(repo.version_dir(MODEL, 1), "cpu", 1)
    ids, mask = model.encode(texts[:1])
    body = {"inputs": [
        {"name": "input_ids", "datatype": "INT64", "shape": list(ids.shape),
         "data": ids.ravel().tolist()},
        {"name": "attention_mask", "datatype": "INT64", "shape": list(mask.shape),
         "data": mask.ravel().tolist()}]}
    response = httpx.post(f"{replica.url}/v2/models/{MODEL}/versions/1/infer", json=body)
    assert response.status_code == 200
    logits = np.asarray(response.json()["outputs"][0]["data"]).reshape(1, -1)
    assert np.allclose(logits, model.logits(texts[:1]), atol=1e-4)
    wrong_version = httpx.post(f"{replica.url}/v2/models/{MODEL}/versions/2/infer", json=body)
    assert wrong_version.status_code == 400 and "not loaded" in wrong_version.json()["error"]
    client.close()


def test_swaps_under_load_fail_no_request(served: tuple[ReplicaProcess, ModelRepository]) -> None:
    replica, _ = served
    failures: list[str] = []
    versions: set[str] = set()
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=replica.url, timeout=10) as http:
            while not stop.is_set():
                r = http.post(f"/v2/models/{MODEL}/text", content="fast reliable router")
                if r.status_code != 200:
                    failures.append(r.text)
                else:
                    versions.add(r.json()["model_version"])

    workers = [threading.Thread(target=hammer) for _ in range(4)]
    for w in workers:
        w.start()
    client = ReplicaClient(replica.url)
    try:
        for version in (2, 1, 2, 1):
            client.load(MODEL, triton_config(MODEL, "sequence-classification", version))
            assert client.served_version(MODEL) == version
    finally:
        stop.set()
        for w in workers:
            w.join()
        client.close()
    assert failures == []
    assert versions == {"1", "2"}


def test_refused_loads_keep_the_old_version(served: tuple[ReplicaProcess,
                                                          ModelRepository]) -> None:
    replica, repo = served
    bad = repo.publish(MODEL, cached_onnx_classifier("fp32"), run_id="to-break")
    onnx = repo.version_dir(MODEL, bad.version) / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-10])  # truncated after publishing
    client = ReplicaClient(replica.url)
    with pytest.raises(ReplicaRejectedError, match=r"sha256|missing"):
        client.load(MODEL, triton_config(MODEL, bad.task, bad.version))
    with pytest.raises(ReplicaRejectedError, match="not in"):
        client.load(MODEL, triton_config(MODEL, bad.task, 99))
    for evil in ("../../etc", "..%2F..%2Fetc"):
        r = httpx.post(f"{replica.url}/v2/repository/models/{evil}/load", json={})
        assert r.status_code in (400, 404)
    r = httpx.post(f"{replica.url}/v2/repository/models/{MODEL}/load",
                   json={"parameters": {"version": "../1"}})
    assert r.status_code == 400
    assert client.served_version(MODEL) == 1
    assert client.infer_text(MODEL, ["ok"]).model_version == "1"
    client.unload(MODEL)
    assert not client.model_ready(MODEL)
    assert httpx.post(f"{replica.url}/v2/models/{MODEL}/text", content="x").status_code == 400
    client.load(MODEL, triton_config(MODEL, bad.task, 1))
    assert client.model_ready(MODEL, 1)
    client.close()


def test_every_request_becomes_an_inference_event(
        served: tuple[ReplicaProcess, ModelRepository], broker: LocalBroker) -> None:
    from kafka import KafkaConsumer

    replica, _ = served
    ids = [f"evt-{uuid.uuid4().hex[:8]}-{i}" for i in range(5)]
    for rid in ids:
        assert httpx.post(f"{replica.url}/v2/models/{MODEL}/text", content=f"text {rid}",
                          headers={"x-request-id": rid}).status_code == 200
    consumer = KafkaConsumer(TOPIC, bootstrap_servers=broker.bootstrap, group_id=None,
                             auto_offset_reset="earliest")
    found: dict[str, InferenceEvent] = {}
    deadline = time.monotonic() + 15
    while len(found) < len(ids) and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            for record in records:
                event = decode(record.value)
                if isinstance(event, InferenceEvent) and event.request_id in ids:
                    assert record.key == MODEL.encode()
                    found[event.request_id] = event
    consumer.close()
    assert set(found) == set(ids)
    event = found[ids[0]]
    assert event.model == MODEL and event.replica == "solo" and event.status == "ok"
    assert event.input == {"text": f"text {ids[0]}"} and event.latency_ms >= 0
    assert event.output is not None and event.output.label in ("negative", "positive")
    assert event.model_version in ("1", "2")


def test_cli_help_documents_the_options(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", "from daemon.cli import main; main()",
                          "replica", "--help"], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    for option in ("--repository", "--model", "--port", "--kafka", "--sample-rate",
                   "--device", "--threads", "--max-batch", "--batch-wait-ms"):
        assert option in out.stdout
    bad = subprocess.run([sys.executable, "-c", "from daemon.cli import main; main()",
                          "replica", "--repository", str(tmp_path), "--device", "gpu"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--device" in bad.stderr


def test_prometheus_metrics_count_what_was_served(
        served: tuple[ReplicaProcess, ModelRepository]) -> None:
    replica, _ = served

    def scrape() -> dict[str, float]:
        text = httpx.get(f"{replica.url}/metrics").text
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines() if line and not line.startswith("#")}

    before = scrape()
    version = ReplicaClient(replica.url).served_version(MODEL)
    key = f'lifeguard_replica_requests_total{{model="{MODEL}",status="ok",version="{version}"}}'
    for _ in range(7):
        httpx.post(f"{replica.url}/v2/models/{MODEL}/text", content="sturdy speaker")
    after = scrape()
    assert after[key] - before.get(key, 0.0) == 7
    assert after[f'lifeguard_replica_model_version{{model="{MODEL}"}}'] == version
    assert after["lifeguard_replica_batch_size_count"] >= before.get(
        "lifeguard_replica_batch_size_count", 0) + 1
    assert after['lifeguard_replica_events_total{outcome="sent"}'] > 0


def test_openai_endpoints_over_the_generator(
        served: tuple[ReplicaProcess, ModelRepository], broker: LocalBroker) -> None:
    """/v1 as the official openai client sees it: models, chat streamed or not, usage, stop;
    and the InferenceEvents those requests wrote."""
    import openai
    from kafka import KafkaConsumer

    replica, repo = served
    client = openai.OpenAI(base_url=replica.url + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == [LM]  # generators only
    messages = [{"role": "user", "content": "the battery is"}]
    answer = client.chat.completions.create(model=LM, messages=messages,  # type: ignore[arg-type]
                                            max_tokens=6)
    text = answer.choices[0].message.content
    assert answer.usage is not None and text is not None
    # Greedy decoding: the same text as generating from the rendered chat in this process.
    from deploy.inference import OnnxCausalLM

    local = OnnxCausalLM.from_dir(repo.version_dir(LM, 1), "cpu", 1)
    assert text == local.generate(["user: the battery is\nassistant:"], max_new_tokens=6)[0]
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    assert answer.choices[0].finish_reason == (
        "length" if answer.usage.completion_tokens == 6 else "stop")
    stream_id = f"v1-stream-{uuid.uuid4().hex[:8]}"
    chunks = list(client.chat.completions.create(
        model=LM, messages=messages, max_tokens=6, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True}, extra_headers={"x-request-id": stream_id}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].choices == [] and chunks[-1].usage == answer.usage
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == (
        answer.choices[0].finish_reason)
    if len(text.strip()) > 2:  # a stop string cuts the answer before it
        stop = text.strip()[1:3]
        cut = client.chat.completions.create(model=LM, messages=messages,  # type: ignore[arg-type]
                                             max_tokens=6, stop=[stop])
        assert cut.choices[0].message.content == text[:text.index(stop)]
        assert cut.choices[0].finish_reason == "stop"
    with pytest.raises(openai.BadRequestError, match="not a generator"):
        client.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="n=1"):
        client.chat.completions.create(model=LM, messages=messages, n=2)  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=messages)  # type: ignore[arg-type]
    consumer = KafkaConsumer(TOPIC, bootstrap_servers=broker.bootstrap, group_id=None,
                             auto_offset_reset="earliest")
    event = None
    deadline = time.monotonic() + 15
    while event is None and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            event = next((e for e in map(lambda r: decode(r.value), records)
                          if isinstance(e, InferenceEvent) and e.request_id == stream_id), event)
    consumer.close()
    assert event is not None and event.model == LM and event.model_version == "1"
    assert event.ttft_ms is not None and 0 < event.ttft_ms <= event.latency_ms
    assert (event.tokens_in, event.tokens_out) == (answer.usage.prompt_tokens,
                                                   answer.usage.completion_tokens)
    assert event.output is not None and event.output.text == text
    assert event.output.finish_reason == answer.choices[0].finish_reason
    assert event.input is not None and [(m.role, m.content) for m in event.input[  # type: ignore[union-attr]
        "messages"]] == [("user", "the battery is")]


def _events(broker: LocalBroker, ids: set[str]) -> dict[str, InferenceEvent]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(TOPIC, bootstrap_servers=broker.bootstrap, group_id=None,
                             auto_offset_reset="earliest")
    found: dict[str, InferenceEvent] = {}
    deadline = time.monotonic() + 15
    while len(found) < len(ids) and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            for record in records:
                event = decode(record.value)
                if isinstance(event, InferenceEvent) and event.request_id in ids:
                    found[event.request_id] = event
    consumer.close()
    return found


def test_triton_generate_extension_and_its_events(
        served: tuple[ReplicaProcess, ModelRepository], broker: LocalBroker) -> None:
    """generate and generate_stream over HTTP: greedy answers are the KV-cache decode of the
    same graph in this process, a stream's events add up to the answer, sampling is seeded,
    and every request's event carries TTFT, token counts, finish_reason, params and prompt."""
    import json

    from deploy.inference import OnnxCausalLM

    replica, repo = served
    url = f"{replica.url}/v2/models/{LM}"
    prompt = "the battery is"
    once = httpx.post(f"{url}/generate", headers={"x-request-id": "gen-once"},
                      json={"text_input": prompt, "parameters": {"max_tokens": 6}})
    assert once.status_code == 200
    body = once.json()
    assert set(body) == {"model_name", "model_version", "text_output"}
    assert (body["model_name"], body["model_version"]) == (LM, "1")
    local = OnnxCausalLM.from_dir(repo.version_dir(LM, 1), "cpu", 1)
    assert local.has_cache
    assert body["text_output"] == local.generate([prompt], max_new_tokens=6)[0]

    with httpx.stream("POST", f"{url}/versions/1/generate_stream",
                      headers={"x-request-id": "gen-stream"},
                      json={"text_input": prompt, "parameters": {"max_tokens": 6}}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    events = [json.loads(line[6:]) for line in lines]
    assert all(e["model_name"] == LM and e["model_version"] == "1" for e in events)
    assert "".join(e["text_output"] for e in events) == body["text_output"]
    assert len(events) >= 2  # token by token, not one blob

    sampled = [httpx.post(f"{url}/generate", headers={"x-request-id": f"gen-sample-{i}"},
                          json={"text_input": prompt, "parameters": {
                              "max_tokens": 8, "temperature": 1.5, "top_p": 0.95,
                              "seed": seed}}).json()["text_output"]
               for i, seed in enumerate((7, 7, 8, 9, 10))]
    assert sampled[0] == sampled[1]  # one seed, one answer
    assert len(set(sampled)) > 1  # temperature really samples

    bad = httpx.post(f"{url}/generate", json={"text_input": prompt,
                                               "parameters": {"temperature": -1}})
    assert bad.status_code == 400 and "temperature" in bad.json()["error"]
    assert httpx.post(f"{replica.url}/v2/models/{MODEL}/generate",
                      json={"text_input": "x"}).status_code == 400  # a classifier
    assert httpx.post(f"{replica.url}/v2/models/nope/generate",
                      json={"text_input": "x"}).status_code == 404
    assert httpx.post(f"{url}/versions/9/generate", json={"text_input": "x"}).status_code == 404

    found = _events(broker, {"gen-once", "gen-stream", "gen-sample-0"})
    assert set(found) == {"gen-once", "gen-stream", "gen-sample-0"}
    for rid in ("gen-once", "gen-stream"):
        event = found[rid]
        assert event.model == LM and event.model_version == "1" and event.status == "ok"
        assert event.input == {"prompt": prompt} and event.params == {"max_tokens": 6}
        assert event.ttft_ms is not None and 0 < event.ttft_ms <= event.latency_ms
        assert event.tokens_in == len(local.prompt_ids(prompt))
        assert event.output is not None and event.output.text == body["text_output"]
        assert event.tokens_out is not None and 1 <= event.tokens_out <= 6
        assert event.output.finish_reason == ("length" if event.tokens_out == 6 else "stop")
    assert found["gen-sample-0"].params == {"max_tokens": 8, "temperature": 1.5, "top_p": 0.95,
                                            "seed": 7}
