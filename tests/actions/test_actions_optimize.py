"""LoRA fine-tuning (merged before saving) and structured layer pruning with its guard."""

from __future__ import annotations

from pathlib import Path

from actions.contract import StepContext, StepResult
from actions.settings import ActionPolicy
from actions.steps import run_step
from lifeguard.files import sha256_file


def test_lora_fine_tune_learns_and_saves_plain_merged_weights(clf_ctx: StepContext,
                                                              tmp_path: Path) -> None:
    from safetensors import safe_open

    ctx = clf_ctx.replace(output_dir=tmp_path, train=clf_ctx.train
                          .model_copy(update={"method": "lora", "learning_rate": 1e-2}))
    result = run_step("fine_tune", ctx)
    assert result.evidence["method"] == "lora"
    assert result.evidence["loss_after"] < result.evidence["loss_before"]
    with safe_open(str(result.model_dir / "model.safetensors"), "np") as f:
        keys = list(f.keys())
    assert keys and not [k for k in keys if "lora" in k]  # merged: a plain BERT again
    from actions.torch_models import load_torch_model

    assert type(load_torch_model(result.model_dir, "cpu", 2).model).__name__ == (
        "BertForSequenceClassification")


def test_prune_removes_the_least_important_layer_under_the_guard(
    clf_ctx: StepContext, tuned: StepResult
) -> None:
    from actions.torch_models import load_torch_model

    ctx = clf_ctx.replace(model_dir=tuned.model_dir,
                          policy=ActionPolicy(prune_fraction=0.5, prune_recovery_steps=30,
                                              max_prune_drop=0.05))
    result = run_step("prune", ctx)
    m = result.evidence
    assert m["layers_before"] == 2 and m["layers_after"] == 1
    least = min(range(2), key=lambda i: m["importance"][i])
    assert m["dropped_layers"] == [least]
    assert m["params_after"] < m["params_before"]
    assert m["latency_ms_before"] > 0 and m["latency_ms_after"] > 0
    reloaded = load_torch_model(result.model_dir, "cpu", 2)
    if m["fallback"]:
        assert m["loss"] > m["allowed"] and reloaded.model.config.num_hidden_layers == 2
    else:
        assert m["loss"] <= m["allowed"]
        assert reloaded.model.config.num_hidden_layers == 1
        assert len(reloaded.model.bert.encoder.layer) == 1


def test_prune_guard_keeps_the_unpruned_model_when_accuracy_falls(
    clf_ctx: StepContext, tuned: StepResult, tmp_path: Path
) -> None:
    # a recovery fine-tune that diverges (learning rate 1.0) wrecks the pruned model: refused
    ctx = clf_ctx.replace(model_dir=tuned.model_dir, output_dir=tmp_path,
                          train=clf_ctx.train.model_copy(update={"learning_rate": 1.0}),
                          policy=ActionPolicy(prune_fraction=0.5, prune_recovery_steps=10,
                                              max_prune_drop=0.02))
    first = run_step("prune", ctx)
    m = first.evidence
    assert m["score_after"] < m["score_before"] - 0.02
    assert m["fallback"] and "keeping the unpruned model" in m["reason"]
    assert (sha256_file(first.model_dir / "model.safetensors")
            == sha256_file(tuned.model_dir / "model.safetensors"))
    again = run_step("prune", ctx)
    assert again.cached and again.evidence == {**m, "cached": True}
