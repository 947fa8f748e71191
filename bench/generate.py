"""Benchmark of generation on the exported KV cache: a small GPT-2-style model (4 layers, width
256, built here from a config and briefly trained on the review corpus: nothing from a hub) is
exported with its cache and quantized; 64 new tokens are decoded with the cache (prefill, then
one step per token) and without it (the whole sequence again for every token), in the same run,
after a prompt of about 90 tokens (a chat's context).

    .venv/bin/python bench/generate.py [--threads N] [--rounds R] [--workdir DIR]

Times are medians over interleaved rounds, so load from other processes falls on both alike.
Parity: prompts whose 64 greedy tokens from the ONNX graph are PyTorch's own, of how many.
Last line: ``generate kv speedup S at 64 new tokens vs no-cache, int8 tokens/s T, parity P/N``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the repo's packages and harness

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

NEW_TOKENS = 64
PROMPTS = ("the battery was", "i think the pasta", "my laptop screen is really",
           "overall the service was", "this router", "the coffee today was very",
           "after a week the charger", "quite a good")


def build_model(out: Path, seed: int = 0, steps: int = 40) -> Path:
    """A GPT-2 (4 layers, n_embd 256, 256 positions) with a byte-BPE tokenizer, trained for
    ``steps`` batches so it continues text rather than repeating noise."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from harness.tiny_models import review_corpus, train_tokenizer

    texts = [t for d in ("electronics", "restaurants") for t, _ in review_corpus(400, d, seed)]
    tokenizer = train_tokenizer(texts, vocab_size=800, kind="bpe")
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=256, n_layer=4, n_head=4,
                        n_positions=256, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for step in range(steps):
        chunk = texts[(step * 32) % len(texts):][:32]
        enc = tokenizer([tokenizer.bos_token + t for t in chunk], padding=True,
                        return_tensors="pt")
        labels = enc["input_ids"].clone()
        labels[enc["attention_mask"] == 0] = -100
        model(**enc, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(out)
    tokenizer.model_max_length = 256
    tokenizer.save_pretrained(out)
    return out


def decode(model: Any, row: list[int], cache: bool) -> float:
    """Seconds to make NEW_TOKENS greedy tokens after ``row`` (EOS does not stop it: every run
    does the same work)."""
    import numpy as np

    started = time.perf_counter()
    tokens = list(row)
    if cache:
        ids = np.asarray([tokens], dtype=np.int64)
        past = model.empty_past(1)
        positions = np.arange(len(tokens), dtype=np.int64)[None]
        for _ in range(NEW_TOKENS):
            logits, past = model.step(ids, np.ones((1, len(tokens)), np.int64), positions, past)
            tokens.append(int(logits[0, -1].argmax()))
            ids = np.asarray([[tokens[-1]]], dtype=np.int64)
            positions = np.asarray([[len(tokens) - 1]], dtype=np.int64)
    else:
        for _ in range(NEW_TOKENS):
            ids = np.asarray([tokens], dtype=np.int64)
            tokens.append(int(model.run(ids, np.ones_like(ids))[0, -1].argmax()))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="lifeguard-bench-generate-"))

    from actions.export import export_model
    from actions.export_lm import token_parity
    from actions.quantize import quantize_model
    from actions.torch_models import load_torch_model
    from deploy.inference import OnnxCausalLM

    started = time.perf_counter()
    torch_dir = build_model(work / "torch")
    report = export_model(torch_dir, work / "fp32", threads=args.threads)
    quantize_model(work / "fp32", work / "int8")
    print(f"model built, exported ({report.exporter}, {report.onnx_bytes / 1e6:.1f} MB, export "
          f"parity {report.token_parity}) and quantized in {time.perf_counter() - started:.0f} s",
          flush=True)

    fp32 = OnnxCausalLM.from_dir(work / "fp32", "cpu", args.threads)
    int8 = OnnxCausalLM.from_dir(work / "int8", "cpu", args.threads)
    parity = token_parity(load_torch_model(torch_dir, "cpu", args.threads), fp32, NEW_TOKENS,
                          PROMPTS)
    # a support-sized prompt (about 90 tokens: a few messages of context), as chat traffic has
    from harness.tiny_models import review_corpus

    context = ". ".join(t for t, _ in review_corpus(12, "electronics", 5))
    row = fp32.prompt_ids(context)[-100:]
    for model in (fp32, int8):  # warm-up: first runs allocate
        decode(model, row, cache=True)
    decode(fp32, row, cache=False)
    times: dict[str, list[float]] = {"kv": [], "no-cache": [], "int8 kv": []}
    for _ in range(args.rounds):
        times["kv"].append(decode(fp32, row, cache=True))
        times["no-cache"].append(decode(fp32, row, cache=False))
        times["int8 kv"].append(decode(int8, row, cache=True))
    median = {k: statistics.median(v) for k, v in times.items()}
    for name, seconds in median.items():
        print(f"  {name:<9} {seconds * 1000:8.1f} ms for {NEW_TOKENS} tokens "
              f"({NEW_TOKENS / seconds:7.1f} tokens/s), prompt {len(row)} tokens", flush=True)
    speedup = median["no-cache"] / median["kv"]
    print(f"generate kv speedup {speedup:.1f} at {NEW_TOKENS} new tokens vs no-cache, int8 "
          f"tokens/s {NEW_TOKENS / median['int8 kv']:.0f}, parity "
          f"{parity.identical}/{parity.prompts}")


if __name__ == "__main__":
    main()
