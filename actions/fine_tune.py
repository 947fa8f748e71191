"""The fine_tune step: train the input model on the snapshot's training share (plus a replay
share of reference data), full or LoRA (merged before saving), into a save_pretrained folder.

A causal LM gets supervised fine-tuning on the completion tokens only (prompt tokens are
labelled -100: context, never targets), LoRA by default, its chat prompts rendered by the
tokenizer's chat template as the replica renders them; bf16 autocast on CUDA.

Trainer: our own loop (actions.training), not trl's SFTTrainer. What decides it: a run resumed
from a checkpoint must make the very weights of an uninterrupted one, which our loop gets from
step-seeded batches and dropout (trl/accelerate's resume skips batches of a shuffled sampler,
and its checkpoints carry pickled RNG state we would load); the same loop serves classifiers
and prune's recovery; and trl brings datasets/accelerate into the worker for what the
completion-only mask (``training.collate``) does in a dozen lines.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from actions.artifacts import input_digest, publish, step_key, step_result, work_dir
from actions.contract import StepContext, StepResult
from actions.errors import BadInput
from actions.progress import Progress, report
from actions.prompts import training_pairs
from actions.snapshot import Row, classifier_pairs, read_snapshot, split_holdout
from actions.torch_models import SEQ_CLS, TorchModel, load_torch_model
from actions.training import Example, mean_loss, train

NAME = "fine_tune"
VERSION = 2  # 2: LoRA by default for causal LMs, chat prompts through the template
_LOSS_PROBE = 64  # examples the before/after loss is measured on


def examples_for(tm: TorchModel, rows: list[Row]) -> tuple[list[Example], int]:
    if tm.task == SEQ_CLS:
        return classifier_pairs(rows, tm.labels)  # type: ignore[return-value]
    return training_pairs(rows, tm.tokenizer)  # type: ignore[return-value]


def method_for(task: str, method: str) -> str:
    """``auto``: LoRA for a causal LM (a few adapters learn a domain without forgetting the
    rest, and train in a fraction of the memory), all weights for a small classifier."""
    if method != "auto":
        return method
    return "full" if task == SEQ_CLS else "lora"


def training_examples(ctx: StepContext, tm: TorchModel) -> tuple[list[Example], dict[str, int]]:
    """The snapshot's training share, plus replay rows so that ``replay_fraction`` of the
    result comes from the reference data. Holdout rows are never included."""
    if ctx.snapshot is None:
        raise BadInput("fine_tune needs a data snapshot")
    train_rows, holdout = split_holdout(read_snapshot(ctx.snapshot), ctx.policy.holdout_fraction)
    fresh, skipped = examples_for(tm, train_rows)
    if len(fresh) < ctx.policy.min_train_rows:
        raise BadInput(
            f"{len(fresh)} usable training rows in {ctx.snapshot}, "
            f"policy needs {ctx.policy.min_train_rows}"
        )
    replay: list[Example] = []
    share = ctx.policy.replay_fraction
    if ctx.reference is not None and share > 0:
        pool, _ = examples_for(tm, read_snapshot(ctx.reference))
        wanted = min(len(pool), round(len(fresh) * share / (1 - share)))
        rng = np.random.default_rng([ctx.train.seed, 7])
        replay = [pool[int(i)] for i in rng.choice(len(pool), size=wanted, replace=False)]
    counts = {"train_rows": len(fresh), "replay_rows": len(replay), "skipped_rows": skipped,
              "holdout_rows": len(holdout)}
    return fresh + replay, counts


def _wrap_lora(tm: TorchModel, ctx: StepContext) -> Any:
    from peft import LoraConfig, TaskType, get_peft_model

    task = TaskType.SEQ_CLS if tm.task == SEQ_CLS else TaskType.CAUSAL_LM
    # every linear layer of a causal LM (attention and MLP, not the head), as QLoRA found
    # necessary to match full fine-tuning; peft's default is the attention projection only
    targets = None if tm.task == SEQ_CLS else "all-linear"
    config = LoraConfig(task_type=task, r=ctx.train.lora_r, lora_alpha=ctx.train.lora_alpha,
                        lora_dropout=ctx.train.lora_dropout, target_modules=targets)
    return get_peft_model(tm.model, config)


def run(ctx: StepContext) -> StepResult:
    model_dir = ctx.input_model()
    inputs = {
        "model": input_digest(model_dir),
        "snapshot": input_digest(ctx.snapshot),
        "reference": input_digest(ctx.reference) if ctx.policy.replay_fraction > 0 else None,
        "train": ctx.train.model_dump(),
        "holdout_fraction": ctx.policy.holdout_fraction,
        "replay_fraction": ctx.policy.replay_fraction,
        "min_train_rows": ctx.policy.min_train_rows,
    }
    key = step_key(NAME, VERSION, inputs)

    def build(out: Path) -> dict[str, Any]:
        started = time.perf_counter()
        tm = load_torch_model(model_dir, ctx.device, ctx.threads)
        examples, counts = training_examples(ctx, tm)
        probe = examples[:_LOSS_PROBE]
        length = min(ctx.train.max_length, tm.max_length)
        cfg = ctx.train.model_copy(update={"max_length": length})
        loss_before = mean_loss(tm.model, tm.tokenizer, tm.task, probe, length, tm.device)
        method = method_for(tm.task, ctx.train.method)
        model = _wrap_lora(tm, ctx) if method == "lora" else tm.model

        def on_step(done: int, total: int, loss: float) -> None:
            report(ctx, Progress(ctx.run_id, NAME, done, total, loss))

        outcome = train(model, tm.tokenizer, tm.task, examples, cfg, tm.device, on_step,
                        checkpoint_dir=work_dir(ctx.output_dir, NAME, key))
        if method == "lora":
            model = model.merge_and_unload()  # plain weights: export and serving know no LoRA
        loss_after = mean_loss(model, tm.tokenizer, tm.task, probe, length, tm.device)
        model.to("cpu").save_pretrained(str(out))
        tm.tokenizer.model_max_length = length
        tm.tokenizer.save_pretrained(str(out))
        return {
            "task": tm.task, "method": method, "device": tm.device, **counts,
            "bf16_autocast": tm.device == "cuda",
            "steps": outcome.steps, "resumed_from_step": outcome.resumed_from,
            "loss_before": round(loss_before, 6), "loss_after": round(loss_after, 6),
            "last_batch_loss": round(outcome.last_loss, 6),
            "seconds": round(time.perf_counter() - started, 3),
        }

    pub = publish(ctx.output_dir, NAME, key, ctx.run_id, inputs, build)
    return step_result(NAME, pub, pub.path)
