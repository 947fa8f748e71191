"""The support demo's base model: a small GPT-2 with its own byte-BPE tokenizer, trained from
scratch on the simulator's product-A support chats by the same action steps a retrain uses
(fine_tune full, export_onnx, quantize), and cached so only the first run pays for it."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from harness.base_model import BaseModel

Say = Callable[[str], None]


def quiet_third_parties() -> None:
    """No third-party noise on a newcomer's terminal: transformers' load reports, the torch
    exporter's warnings, ONNX Runtime's hints."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore")
    for name in ("transformers", "torch.onnx", "torch.onnx._internal.exporter._registration",
                 "onnxruntime", "onnxscript", "peft", "torch._dynamo", "torch.export"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # onnxruntime's quantizer advises pre-processing through the root logger.
    logging.getLogger().addFilter(lambda record: "pre-processing" not in record.getMessage())
    try:
        import onnxruntime

        onnxruntime.set_default_logger_severity(3)
    except ImportError:  # pragma: no cover - onnxruntime-gpu is a dependency
        pass
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _initial_lm(out: Path, seed: int, max_length: int, tiny: bool) -> Path:
    """A randomly initialised GPT-2 (a few layers) and a byte-BPE tokenizer trained on both
    products' chats, so the shift's words have their own tokens."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from harness.tiny_models import train_tokenizer
    from simulator.support import tokenizer_texts

    tokenizer = train_tokenizer(tokenizer_texts(200, seed), vocab_size=600, kind="bpe")
    torch.manual_seed(seed)
    # 128 wide, 4 layers: the smallest that learns the new product's answers from the ~60
    # references a trigger's snapshot holds (64x2 reached 0.85-0.97 of its ground truth
    # depending on the seed, 128x4 0.97-1.0; training stays under a minute on 2 cores)
    width, layers, heads = (32, 2, 2) if tiny else (128, 4, 4)
    # positions past the trained length: bench/generate.py decodes 64 tokens after a chat's
    # context on this very model (the replicas serve it at ``max_length``)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=width, n_layer=layers, n_head=heads,
                        n_positions=max(max_length, 256), bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    GPT2LMHeadModel(config).save_pretrained(out)
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(out)
    return out


def prepare_support_model(cache: Path, seed: int = 0, tiny: bool = False,
                          say: Say | None = None) -> BaseModel:
    """Build (or reuse) the support bot trained on product A. ``say`` gets one progress line
    at a time (with an estimate of what is left); ``tiny`` trains a smaller model for fewer
    steps, for tests: it answers worse, the plumbing is the same."""
    n_train, epochs, max_length = (400, 12, 64) if tiny else (1000, 8, 64)
    key = f"support-lm-{'tiny' if tiny else 'small128x4p256'}-{n_train}-{epochs}-{seed}"
    root = cache / key
    done = root / "base.json"
    if done.is_file():
        record = json.loads(done.read_text())
        return BaseModel(Path(record["checkpoint"]), Path(record["deployable"]),
                         record["metrics"])
    quiet_third_parties()
    import torch

    from actions.contract import StepContext
    from actions.progress import Progress
    from actions.settings import ActionPolicy, TrainConfig
    from actions.steps import run_pipeline
    from simulator.support import exchanges

    threads = max(1, min(2, len(os.sched_getaffinity(0))))
    torch.set_num_threads(threads)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    initial = _initial_lm(root / "init", seed, max_length, tiny)
    snapshot = root / "train.jsonl"
    with open(snapshot, "w") as f:
        for i, e in enumerate(exchanges(n_train, seed=seed)):
            f.write(json.dumps({"request_id": f"base-{i}", "text": e.prompt,
                                "reference": e.answer}) + "\n")
    started = time.monotonic()

    def progress(p: Progress) -> None:
        if say is None or not p.total:
            return
        spent = time.monotonic() - started
        left = spent / max(p.current, 1) * (p.total - p.current)
        loss = "" if p.loss is None else f", loss {p.loss:.2f}"
        say(f"preparing the support model: training step {p.current}/{p.total}{loss}, "
            f"about {left:.0f}s left, then export and quantize")

    ctx = StepContext(run_id=f"base-{key}", model_dir=initial, output_dir=root / "artifacts",
                      snapshot=snapshot, device="cpu", threads=threads, progress=progress,
                      policy=ActionPolicy(holdout_fraction=0.1),
                      train=TrainConfig(method="full", epochs=epochs, batch_size=32,
                                        learning_rate=3e-3, warmup_ratio=0.05,
                                        max_length=max_length, seed=seed))
    fine_tuned, _exported, quantized = run_pipeline(ctx, ("fine_tune", "export_onnx",
                                                          "quantize"))
    if say is not None:
        say(f"support model ready in {time.monotonic() - started:.0f}s")
    metrics = {**fine_tuned.evidence, **{f"quantize.{k}": v for k, v in quantized.evidence.items()}}
    assert fine_tuned.model_dir is not None and quantized.model_dir is not None
    record = {"checkpoint": str(fine_tuned.model_dir), "deployable": str(quantized.model_dir),
              "metrics": {k: v for k, v in metrics.items()
                          if isinstance(v, int | float | str | bool)}}
    done.write_text(json.dumps(record, indent=2))
    return BaseModel(fine_tuned.model_dir, quantized.model_dir, record["metrics"])
