"""The prune step: structured pruning of whole transformer layers chosen by measured importance
(how much the loss rises without each), a short recovery fine-tune, and the same accuracy guard
as quantize; it reports the latency bought, not only the parameters removed."""

from __future__ import annotations

import copy
import math
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from actions.artifacts import input_digest, publish, step_key, step_result
from actions.contract import StepContext, StepResult
from actions.errors import BadInput
from actions.evaluate import holdout_rows, score
from actions.fine_tune import training_examples
from actions.progress import Progress, report
from actions.torch_models import LoadedModel, TorchModel, load_torch_model
from actions.training import Example, mean_loss, train
from deploy.model_artifact import ARTIFACT_FILE

NAME = "prune"
VERSION = 1
_CALIBRATION = 64  # training examples the importance is measured on


def _container(model: Any) -> tuple[Any, str]:
    base = model.base_model
    encoder = getattr(base, "encoder", None)
    if encoder is not None and hasattr(encoder, "layer"):  # BERT family
        return encoder, "layer"
    if hasattr(base, "h"):  # GPT-2 family
        return base, "h"
    raise BadInput(f"cannot find the layer stack of {type(model).__name__}")


def num_layers(model: Any) -> int:
    owner, attr = _container(model)
    return len(getattr(owner, attr))


def keep_layers(model: Any, keep: list[int]) -> None:
    """Keep only layers ``keep`` (in order); the config follows so save/load round-trips."""
    import torch

    owner, attr = _container(model)
    layers = getattr(owner, attr)
    setattr(owner, attr, torch.nn.ModuleList([layers[i] for i in keep]))
    model.config.num_hidden_layers = len(keep)
    for index, layer in enumerate(getattr(owner, attr)):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = index  # cache slots are indexed by position


def layer_importance(tm: TorchModel, examples: list[Example], max_length: int) -> list[float]:
    """Loss increase on ``examples`` when each layer alone is skipped."""
    owner, attr = _container(tm.model)
    original = getattr(owner, attr)
    base = mean_loss(tm.model, tm.tokenizer, tm.task, examples, max_length, tm.device)
    out = []
    try:
        for i in range(len(original)):
            import torch

            setattr(owner, attr, torch.nn.ModuleList(
                [layer for j, layer in enumerate(original) if j != i]))
            out.append(mean_loss(tm.model, tm.tokenizer, tm.task, examples, max_length,
                                 tm.device) - base)
    finally:
        setattr(owner, attr, original)
    return out


def latency_ms(models: list[TorchModel], seq: int, repeats: int = 20) -> list[float]:
    """Median forward time of each model at batch 1 and ``seq`` tokens, measured interleaved so
    that load from other processes falls on all of them alike."""
    import torch

    ids = torch.randint(5, int(models[0].model.config.vocab_size), (1, seq))
    mask = torch.ones_like(ids)
    times: list[list[float]] = [[] for _ in models]
    for r in range(repeats + 3):
        for k, tm in enumerate(models):
            started = time.perf_counter()
            tm.logits_from_ids(ids, mask)
            if r >= 3:  # the first rounds warm caches and allocators
                times[k].append((time.perf_counter() - started) * 1000)
    return [statistics.median(t) for t in times]


def _params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def run(ctx: StepContext) -> StepResult:
    p = ctx.policy
    model_dir = ctx.input_model()
    inputs = {
        "model": input_digest(model_dir),
        "snapshot": input_digest(ctx.snapshot),
        "reference": input_digest(ctx.reference) if p.replay_fraction > 0 else None,
        "train": ctx.train.model_dump(),
        "policy": p.model_dump(include={"holdout_fraction", "min_holdout_rows", "replay_fraction",
                                        "min_train_rows", "prune_fraction",
                                        "prune_recovery_steps", "max_prune_drop"}),
    }
    key = step_key(NAME, VERSION, inputs)

    def build(out: Path) -> dict[str, Any]:
        tm = load_torch_model(model_dir, ctx.device, ctx.threads)
        length = min(ctx.train.max_length, tm.max_length)
        rows = holdout_rows(ctx)
        examples, _ = training_examples(ctx, tm)
        n = num_layers(tm.model)
        remove = max(1, math.floor(n * p.prune_fraction))
        if n - remove < 1:
            raise BadInput(f"a {n}-layer model cannot lose {remove} layers")
        metric, before, n_rows = score(LoadedModel(tm, tm.task, tm.labels, "torch"), rows,
                                       p.min_holdout_rows)
        original = copy.deepcopy(tm)
        params_before = _params(tm.model)
        importance = layer_importance(tm, examples[:_CALIBRATION], length)
        dropped = sorted(sorted(range(n), key=lambda i: importance[i])[:remove])
        keep_layers(tm.model, [i for i in range(n) if i not in dropped])

        def on_step(done: int, total: int, loss: float) -> None:
            report(ctx, Progress(ctx.run_id, NAME, done, total, loss, "recovery fine-tune"))

        if p.prune_recovery_steps:
            cfg = ctx.train.model_copy(update={"max_length": length})
            train(tm.model, tm.tokenizer, tm.task, examples, cfg, tm.device, on_step,
                  steps=p.prune_recovery_steps)
        after = score(LoadedModel(tm, tm.task, tm.labels, "torch"), rows, p.min_holdout_rows)[1]
        seq = min(64, length)
        lat_before, lat_after = latency_ms([original, tm], seq)
        del original
        if metric == "accuracy":
            loss = before - after
        else:  # relative rise of mean NLL
            loss = math.log(after) / math.log(before) - 1 if before > 1 else 0.0
        meta: dict[str, Any] = {
            "metric": metric, "score_before": round(before, 6), "score_after": round(after, 6),
            "loss": round(loss, 6), "allowed": p.max_prune_drop, "rows": n_rows,
            "layers_before": n, "layers_after": n - remove, "dropped_layers": dropped,
            "importance": [round(x, 6) for x in importance],
            "params_before": params_before, "params_after": _params(tm.model),
            "latency_ms_before": round(lat_before, 3), "latency_ms_after": round(lat_after, 3),
            "speedup": round(lat_before / lat_after, 3), "latency_seq": seq,
        }
        if loss <= p.max_prune_drop + 1e-12:
            tm.model.to("cpu").save_pretrained(str(out))
            tm.tokenizer.model_max_length = length
            tm.tokenizer.save_pretrained(str(out))
            return {**meta, "fallback": False, "reason": ""}
        reason = (f"pruned {metric} {after:.4f} vs {before:.4f}: loss {loss:.4f} exceeds the "
                  f"allowed {p.max_prune_drop:g}; keeping the unpruned model")
        for path in model_dir.iterdir():
            if path.is_file() and path.name != ARTIFACT_FILE:
                shutil.copy2(path, out / path.name)
        return {**meta, "fallback": True, "reason": reason, "speedup": 1.0}

    pub = publish(ctx.output_dir, NAME, key, ctx.run_id, inputs, build)
    return step_result(NAME, pub, pub.path)
