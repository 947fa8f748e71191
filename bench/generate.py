"""Benchmark of generation on the exported KV cache, on the support demo's model (the small
GPT-2 ``lifeguard demo --scenario support`` serves, trained at first run and cached under
var/demo/cache: nothing from a hub), exported with its cache and quantized; 64 new tokens are
decoded with the cache (prefill, then one step per token) and without it (the whole sequence
again for every token), in the same run, after a prompt of about 90 tokens (a support chat's
earlier turns).

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
PROMPT_TOKENS = 90
CACHE = ROOT / "var" / "demo" / "cache"  # the demo's own model cache


def chat_context(turns: int = 12) -> str:
    """A support chat's earlier turns and a new question, rendered as the replica renders it."""
    from simulator.support import exchanges

    lines = [f"user: {e.question}\nassistant: {e.answer}" for e in exchanges(turns, seed=5)]
    return "\n".join([*lines, f"user: {exchanges(1, seed=6)[0].question}\nassistant:"])


def with_room(checkpoint: Path, out: Path, length: int) -> Path:
    """A copy of the demo's checkpoint whose tokenizer allows ``length`` tokens (the replicas
    serve it at 64; its position table has room for more): the context and the new tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(checkpoint).save_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    tokenizer.model_max_length = length
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
    from harness.support_model import prepare_support_model, quiet_third_parties
    from simulator.support import exchanges

    quiet_third_parties()
    started = time.perf_counter()
    base = prepare_support_model(CACHE, say=lambda line: print(line, flush=True))
    torch_dir = with_room(base.checkpoint, work / "torch", PROMPT_TOKENS + NEW_TOKENS + 16)
    report = export_model(torch_dir, work / "fp32", threads=args.threads)
    quantize_model(work / "fp32", work / "int8")
    print(f"demo model exported ({report.exporter}, {report.onnx_bytes / 1e6:.1f} MB, export "
          f"parity {report.token_parity}) and quantized in {time.perf_counter() - started:.0f} s",
          flush=True)

    fp32 = OnnxCausalLM.from_dir(work / "fp32", "cpu", args.threads)
    int8 = OnnxCausalLM.from_dir(work / "int8", "cpu", args.threads)
    prompts = [e.prompt for e in exchanges(8, seed=3)]  # support questions, as served
    parity = token_parity(load_torch_model(torch_dir, "cpu", args.threads), fp32,
                          NEW_TOKENS, prompts)
    row = fp32.prompt_ids(chat_context())[-PROMPT_TOKENS:]
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
