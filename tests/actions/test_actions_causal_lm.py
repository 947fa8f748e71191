"""The steps on a tiny GPT-2: LoRA SFT on the target tokens only, the gate compares perplexity
and ROUGE-L on references, and the exported KV-cache graph scores text and generates tokens as
PyTorch does; int8 is kept only within its NLL bound."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from actions.contract import StepContext, StepResult
from actions.errors import GateFailed
from actions.steps import run_step
from deploy.inference import OnnxCausalLM


@pytest.fixture(scope="module")
def lm_tuned(lm_ctx: StepContext) -> StepResult:
    return run_step("fine_tune", lm_ctx)


def test_fine_tune_lowers_the_target_nll(lm_tuned: StepResult) -> None:
    m = lm_tuned.evidence
    assert m["task"] == "causal-lm" and m["method"] == "lora"  # LoRA by default, merged
    assert m["loss_after"] < m["loss_before"] - 0.2


def test_objective_scores_only_the_target_tokens(lm_dir: Path) -> None:
    from actions.torch_models import load_torch_model
    from actions.training import collate

    tm = load_torch_model(lm_dir, "cpu", 2)
    batch = collate(tm.tokenizer, "causal-lm", [("the battery", " was great"), ("x", " y z")], 48)
    labels, ids = batch["labels"], batch["input_ids"]
    for row in range(2):
        scored = (labels[row] != -100).nonzero().flatten().tolist()
        prompt = "the battery" if row == 0 else "x"
        first = 1 + len(tm.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        assert scored[0] == first  # prompt and BOS are context, never targets
        assert labels[row, scored].tolist() == ids[row, scored].tolist()
        assert ids[row, scored[-1]] == tm.tokenizer.eos_token_id  # the answer ends


def test_gate_compares_perplexity_both_ways(lm_ctx: StepContext, lm_tuned: StepResult) -> None:
    passed = run_step("evaluate", lm_ctx.with_model(lm_tuned.model_dir)).evidence
    assert passed["passed"] and passed["metric"] == "perplexity"
    assert passed["candidate"] < passed["champion"]
    assert passed["targets"] == "references" and passed["rows"] >= 8
    assert passed["candidate_rouge_l"] >= passed["champion_rouge_l"]
    worse = lm_ctx.replace(champion_dir=lm_tuned.model_dir)
    with pytest.raises(GateFailed) as info:
        run_step("evaluate", worse)
    evidence = info.value.evidence
    assert evidence["candidate"] > evidence["champion"]
    assert evidence["candidate_rouge_l"] == passed["champion_rouge_l"]  # the same greedy answers
    assert "rouge_l" in evidence["rule"] and not evidence["passed"]


@pytest.mark.slow
def test_exported_lm_scores_and_generates_like_pytorch(lm_ctx: StepContext,
                                                       lm_tuned: StepResult) -> None:
    from actions.torch_models import load_torch_model

    exported = run_step("export_onnx", lm_ctx.with_model(lm_tuned.model_dir))
    assert exported.evidence["max_abs_diff"] <= 1e-3
    assert exported.evidence["kv_cache"] and exported.evidence["token_parity"] == "5/5"
    onnx_lm = OnnxCausalLM.from_dir(exported.model_dir, device="cpu", threads=2)
    torch_lm = load_torch_model(lm_tuned.model_dir, "cpu", 2)
    texts, prompts = [" pasta was bland", " great coffee today"], ["the", "my"]
    np.testing.assert_allclose(onnx_lm.nll(texts, prompts), torch_lm.nll(texts, prompts),
                               rtol=1e-4)
    out = onnx_lm.generate(["the pasta", "my"], max_new_tokens=5)
    assert len(out) == 2 and all(isinstance(t, str) and t for t in out)
    # greedy generation is the argmax chain of the PyTorch model too
    ids = torch_lm.tokenizer("the pasta", add_special_tokens=False)["input_ids"]
    import torch

    row = [torch_lm.tokenizer.eos_token_id, *ids]
    for _ in range(5):
        logits = torch_lm.logits_from_ids(torch.tensor([row]), torch.ones(1, len(row),
                                                                          dtype=torch.long))
        token = int(logits[0, -1].argmax())
        if token == torch_lm.tokenizer.eos_token_id:
            break
        row.append(token)
    assert out[0] == torch_lm.tokenizer.decode(row[1 + len(ids):], skip_special_tokens=True)

    # the check that gates export fails on a graph of another model (the champion's)
    from actions.export_lm import token_parity
    from harness.tiny_models import cached_onnx_causal_lm

    other = token_parity(torch_lm, OnnxCausalLM.from_dir(cached_onnx_causal_lm(), "cpu", 2))
    assert not other.ok and other.first_mismatch is not None

    strict = lm_ctx.replace(policy=lm_ctx.policy.model_copy(
        update={"max_quantize_nll_increase": 0.0}))
    guarded = run_step("quantize", strict.with_model(exported.model_dir)).evidence
    assert guarded["metric"] == "perplexity" and guarded["allowed"] == 0.0
    assert guarded["fallback"] == (guarded["loss"] > 0)  # any NLL rise keeps fp32
    quantized = run_step("quantize", lm_ctx.with_model(exported.model_dir)).evidence
    if quantized["fallback"]:
        assert quantized["loss"] > quantized["allowed"] and quantized["precision"] == "fp32"
    else:
        assert quantized["loss"] <= quantized["allowed"] and quantized["precision"] == "int8"
