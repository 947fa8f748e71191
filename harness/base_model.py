"""The demo's base classifier: the packaged MiniLM with a sentiment head, fine-tuned on the
simulator's first domain by the same action steps a retrain uses, exported, quantized, and
cached so only the first run pays for it."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BaseModel:
    """``checkpoint``: the PyTorch dir (the first champion); ``deployable``: what v1 serves."""

    checkpoint: Path
    deployable: Path
    metrics: dict[str, object]


def prepare_base_model(cache: Path, n_train: int = 2000, seed: int = 0,
                       max_length: int = 64, epochs: int = 2) -> BaseModel:
    """Build (or reuse) the MiniLM sentiment classifier trained on the base domain."""
    key = f"minilm-{n_train}-{seed}-{max_length}-{epochs}"
    root = cache / key
    done = root / "base.json"
    if done.is_file():
        record = json.loads(done.read_text())
        return BaseModel(Path(record["checkpoint"]), Path(record["deployable"]),
                         record["metrics"])
    import torch

    from actions.base_models import minilm_classifier
    from actions.contract import StepContext
    from actions.settings import ActionPolicy, TrainConfig
    from actions.steps import run_pipeline
    from simulator.corpus import training_examples

    threads = max(1, min(2, len(os.sched_getaffinity(0))))
    torch.set_num_threads(threads)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    initial = minilm_classifier(root / "init", seed=seed, max_length=max_length)
    snapshot = root / "train.jsonl"
    with open(snapshot, "w") as f:
        for i, (text, label) in enumerate(training_examples(n_train, seed=seed)):
            f.write(json.dumps({"request_id": f"base-{i}", "text": text, "label": label}) + "\n")
    ctx = StepContext(run_id=f"base-{key}", model_dir=initial, output_dir=root / "artifacts",
                      snapshot=snapshot, device="auto", threads=threads,
                      policy=ActionPolicy(holdout_fraction=0.15),
                      train=TrainConfig(epochs=epochs, batch_size=32, learning_rate=5e-5,
                                        max_length=max_length, seed=seed))
    fine_tuned, exported, quantized = run_pipeline(ctx, ("fine_tune", "export_onnx",
                                                         "quantize"))
    metrics = {**fine_tuned.evidence, **{f"quantize.{k}": v for k, v in quantized.evidence.items()
                                         if isinstance(v, int | float | str | bool)}}
    assert fine_tuned.model_dir is not None and quantized.model_dir is not None
    record = {"checkpoint": str(fine_tuned.model_dir), "deployable": str(quantized.model_dir),
              "metrics": {k: v for k, v in metrics.items()
                          if isinstance(v, int | float | str | bool)}}
    done.write_text(json.dumps(record, indent=2))
    del exported
    return BaseModel(fine_tuned.model_dir, quantized.model_dir, record["metrics"])


def prepare_tiny_base_model(cache: Path, seed: int = 0) -> BaseModel:
    """For tests of the demo's plumbing (``lifeguard demo --tiny``): a tiny classifier built in
    seconds and exported to ONNX fp32. It learns little; the loop's numbers mean nothing."""
    from harness.tiny_models import build_classifier, build_onnx_classifier
    from simulator.corpus import tokenizer_texts, training_examples

    root = cache / f"tiny-{seed}"
    done = root / "base.json"
    if done.is_file():
        record = json.loads(done.read_text())
        return BaseModel(Path(record["checkpoint"]), Path(record["deployable"]), {})
    shutil.rmtree(root, ignore_errors=True)
    checkpoint = build_classifier(root / "checkpoint", training_examples(400, seed=seed),
                                  seed=seed, steps=30, tokenizer_texts=tokenizer_texts(200),
                                  max_length=48)
    deployable = build_onnx_classifier(root / "onnx", model_dir=checkpoint)
    done.write_text(json.dumps({"checkpoint": str(checkpoint), "deployable": str(deployable)}))
    return BaseModel(checkpoint, deployable, {})
