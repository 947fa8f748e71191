"""Rollout benchmark: requests/s one replica serves (int8 vs fp32, same replica, same run),
failed requests during a rolling deploy of three replicas under load (target 0), and seconds
from a canary's breach (the judge's first "unhealthy") to rollback complete.

    .venv/bin/python bench/rollout.py [--seconds 8] [--clients 8] [--rounds 4]

Last line: ``rollout failed_requests F, rollback_s T, replica int8 X req/s``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from daemon.ingest.broker import LocalBroker, ensure_topics
from deploy.config import CanaryConfig, FleetConfig, RolloutConfig
from deploy.fleet import ReplicaClient
from deploy.judge import KafkaTrafficJudge
from deploy.repository import ModelRepository, triton_config
from deploy.rollout_store import RolloutStore
from deploy.step import DeployRequest, deploy
from harness.replicas import (
    MODEL,
    TOPIC,
    ReplicaProcess,
    SteadyLoad,
    served_versions,
    swapped_labels,
)
from harness.tiny_models import review_corpus, train_tokenizer

BENCH_MODEL = "bench-bert"


def build_bench_models(root: Path) -> tuple[Path, Path]:
    """A BERT big enough that the model, not HTTP, is most of a request (hidden 256, 4 layers),
    exported fp32 and quantized int8 by the actions' own code. Untrained: speed only."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from actions.export import export_model
    from actions.quantize import quantize_model

    texts = [t for t, _ in review_corpus(500, seed=1)]
    tokenizer = train_tokenizer(texts, vocab_size=400)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=256, num_hidden_layers=4,
                        num_attention_heads=4, intermediate_size=1024, max_position_embeddings=64,
                        type_vocab_size=1, num_labels=2, id2label={0: "negative", 1: "positive"},
                        label2id={"negative": 0, "positive": 1},
                        pad_token_id=tokenizer.pad_token_id)  # type: ignore[call-arg]
    torch_dir = root / "bench.torch"
    BertForSequenceClassification(config).eval().save_pretrained(torch_dir)
    tokenizer.model_max_length = 64
    tokenizer.save_pretrained(torch_dir)
    export_model(torch_dir, root / "bench.fp32")
    quantize_model(root / "bench.fp32", root / "bench.int8")
    return root / "bench.fp32", root / "bench.int8"


async def _throughput(url: str, model: str, texts: list[str], seconds: float,
                      clients: int) -> tuple[float, int]:
    done = failed = 0
    stop_at = time.perf_counter() + seconds

    async def client(index: int) -> None:
        nonlocal done, failed
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            i = index
            while time.perf_counter() < stop_at:
                text = texts[i % len(texts)]
                response = await http.post(f"/v2/models/{model}/text", content=text)
                if response.status_code == 200:
                    done += 1
                else:
                    failed += 1
                i += clients

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return done / (time.perf_counter() - started), failed


def replica_throughput(root: Path, seconds: float, clients: int,
                       rounds: int) -> dict[str, float]:
    fp32, int8 = build_bench_models(root)
    repo = ModelRepository(root / "bench-repo")
    versions = {"fp32": repo.publish(BENCH_MODEL, fp32).version,
                "int8": repo.publish(BENCH_MODEL, int8).version}
    replica = ReplicaProcess(repo.root, "bench", [f"{BENCH_MODEL}:{versions['fp32']}"], None,
                             root)
    replica.start().wait_ready()
    texts = [t for t, _ in review_corpus(200, seed=5)]
    client = ReplicaClient(replica.url, timeout_s=60)
    samples: dict[str, list[float]] = {"fp32": [], "int8": []}
    try:
        # Alternate short rounds and keep each precision's median: on a shared machine, one
        # long run per precision mostly measures what the neighbours did meanwhile.
        for _ in range(rounds):
            for precision in ("fp32", "int8"):
                client.load(BENCH_MODEL, triton_config(BENCH_MODEL, "sequence-classification",
                                                       versions[precision]))
                asyncio.run(_throughput(replica.url, BENCH_MODEL, texts, 0.5, clients))  # warm
                rate, failed = asyncio.run(_throughput(replica.url, BENCH_MODEL, texts,
                                                       seconds / rounds, clients))
                if failed:
                    raise RuntimeError(f"{failed} requests failed during the {precision} round")
                samples[precision].append(rate)
        rates = {p: statistics.median(v) for p, v in samples.items()}
        for precision, values in samples.items():
            print(f"replica {precision}: median {rates[precision]:.1f} req/s over {rounds} "
                  f"rounds {[round(v) for v in values]} ({clients} concurrent clients)",
                  flush=True)
    finally:
        client.close()
        replica.stop()
    return rates


def fleet_rollouts(root: Path, broker: LocalBroker) -> tuple[int, float]:
    from harness.tiny_models import cached_onnx_classifier

    ensure_topics(broker.bootstrap, {TOPIC: 1})
    fp32, int8 = cached_onnx_classifier("fp32"), cached_onnx_classifier("int8")
    wrong = swapped_labels(fp32, root / "wrong")
    repo = ModelRepository(root / "repo")
    stable = repo.publish(MODEL, fp32, run_id="seed").version
    replicas = [ReplicaProcess(repo.root, f"replica-{i}", [f"{MODEL}:{stable}"],
                               broker.bootstrap, root) for i in range(3)]
    for replica in replicas:
        replica.start()
    for replica in replicas:
        replica.wait_ready()
    urls = [r.url for r in replicas]
    canary = CanaryConfig(replicas=1, min_events=100, min_labelled=40, latency_slo_ms=3000,
                          max_latency_ratio=50, max_accuracy_drop=0.1, poll_interval_s=0.2,
                          timeout_s=120)
    examples = review_corpus(400, seed=11)
    try:
        rolling = FleetConfig(replicas=urls, repository=repo.root,
                              rollout=RolloutConfig(strategy="rolling", canary=canary))
        with SteadyLoad(urls, examples, broker.bootstrap, threads=4, interval_s=0.01) as load:
            time.sleep(1)
            result = deploy(DeployRequest(MODEL, int8, run_id="bench-rolling"), rolling,
                            root / "state.db")
            time.sleep(1)
        assert result.outcome == "promoted", result.reason
        print(f"rolling deploy v{stable}->v{result.version}: {load.stats.sent} requests, "
              f"{load.stats.failed} failed; served {served_versions(urls)}", flush=True)

        canary_cfg = FleetConfig(replicas=urls, repository=repo.root,
                                 rollout=RolloutConfig(strategy="canary", canary=canary))
        judge = KafkaTrafficJudge(broker.bootstrap, TOPIC, MODEL, canary)
        with SteadyLoad(urls, examples, broker.bootstrap, threads=4, interval_s=0.01) as bad:
            bad_result = deploy(DeployRequest(MODEL, wrong, run_id="bench-canary-wrong"),
                                canary_cfg, root / "state.db", judge)
        judge.close()
        assert bad_result.outcome == "rolled_back", bad_result
        events = RolloutStore(root / "state.db").events(bad_result.rollout_id)
        breach = next(e.ts for e in events
                      if e.kind == "verdict" and e.detail["verdict"] == "unhealthy")
        done = next(e.ts for e in events
                    if e.kind == "phase" and e.detail["to"] == "rolled_back")
        began = next(e.ts for e in events if e.kind == "created")
        print(f"bad canary v{bad_result.version}: breach {breach - began:.2f}s after the "
              f"rollout began ({bad_result.reason}); rolled back {done - breach:.3f}s after "
              f"the breach; {bad.stats.failed} failed requests; served {served_versions(urls)}",
              flush=True)
        return load.stats.failed + bad.stats.failed, done - breach
    finally:
        for replica in replicas:
            replica.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lifeguard-bench-") as tmp:
        root = Path(tmp)
        rates = replica_throughput(root, args.seconds, args.clients, args.rounds)
        with LocalBroker() as broker:
            failed, rollback_s = fleet_rollouts(root, broker)
    print(f"replica fp32 {rates['fp32']:.1f} req/s, int8/fp32 = "
          f"{rates['int8'] / rates['fp32']:.2f}x")
    print(f"rollout failed_requests {failed}, rollback_s {rollback_s:.2f}, "
          f"replica int8 {rates['int8']:.1f} req/s")


if __name__ == "__main__":
    main()
