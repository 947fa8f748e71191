"""The training loop shared by fine_tune and prune's recovery: deterministic batches, per-step
seeding (so a resumed run makes the same weights as an uninterrupted one), checkpoints, and
the objective: cross-entropy for classifiers, mean NLL of the target tokens for causal LMs (the
prompt's tokens are labelled -100, so only the completion is learned). On CUDA the forward
pass runs under bf16 autocast (weights and optimizer state stay fp32)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from actions.errors import ResourceExhausted
from actions.settings import TrainConfig
from actions.torch_models import SEQ_CLS
from deploy.text_scoring import encode_lm_pair, pad_id

Example = tuple[str, Any]  # (text, label index) or (prompt, target text)
_STATE = "trainer_state.json"


def collate(
    tokenizer: Any, task: str, examples: Sequence[Example], max_length: int
) -> dict[str, Any]:
    import torch

    if task == SEQ_CLS:
        enc = tokenizer([t for t, _ in examples], padding=True, truncation=True,
                        max_length=max_length, return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                "labels": torch.tensor([y for _, y in examples], dtype=torch.long)}
    rows: list[list[int]] = []
    starts: list[int] = []
    for prompt, target in examples:
        row, start = encode_lm_pair(tokenizer, prompt, target, max_length, eos=True)
        rows.append(row)
        starts.append(start)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id(tokenizer), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)  # -100: not scored
    for i, (row, start) in enumerate(zip(rows, starts, strict=True)):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        labels[i, start : len(row)] = torch.tensor(row[start:])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "use_cache": False}


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """The examples of global step ``step``: epoch-wise seeded permutations, no state needed."""
    per_epoch = max(1, math.ceil(n / batch_size))
    epoch, k = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return [int(i) for i in order[k * batch_size : (k + 1) * batch_size]]


def planned_steps(n: int, cfg: TrainConfig) -> int:
    per_epoch = max(1, math.ceil(n / cfg.batch_size))
    total = per_epoch * cfg.epochs
    return min(total, cfg.max_steps) if cfg.max_steps else total


def mean_loss(model: Any, tokenizer: Any, task: str, examples: Sequence[Example],
              max_length: int, device: str, batch_size: int = 32) -> float:
    """Mean objective over ``examples`` in eval mode (weighted by examples per batch)."""
    import torch

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            batch = {k: (v.to(device) if hasattr(v, "to") else v)
                     for k, v in collate(tokenizer, task, chunk, max_length).items()}
            with autocast(device):
                total += float(model(**batch).loss) * len(chunk)
            count += len(chunk)
    model.train(was_training)
    return total / max(count, 1)


def autocast(device: str) -> Any:
    """bf16 autocast on CUDA (no loss scaling needed, unlike fp16); a no-op elsewhere."""
    import torch

    return torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device == "cuda")


@dataclass(frozen=True)
class TrainOutcome:
    steps: int
    resumed_from: int
    last_loss: float


def train(
    model: Any,
    tokenizer: Any,
    task: str,
    examples: Sequence[Example],
    cfg: TrainConfig,
    device: str,
    on_step: Callable[[int, int, float], None],
    checkpoint_dir: Path | None = None,
    steps: int | None = None,
) -> TrainOutcome:
    """Train ``model`` in place on ``examples``; resume from ``checkpoint_dir`` when it holds a
    checkpoint. ``on_step(done, total, loss)`` is called after every optimizer step."""
    import torch

    total = steps if steps is not None else planned_steps(len(examples), cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    warmup = int(total * cfg.warmup_ratio)

    def schedule(step: int) -> float:  # linear warm-up, then linear decay to zero
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    start = _load_checkpoint(checkpoint_dir, model, optimizer, scheduler)
    model.train()
    loss_value = float("nan")
    try:
        for step in range(start, total):
            torch.manual_seed(cfg.seed * 1_000_003 + step)  # dropout masks independent of resume
            chunk = [examples[i] for i in batch_indices(len(examples), cfg.batch_size,
                                                        cfg.seed, step)]
            batch = {k: (v.to(device) if hasattr(v, "to") else v)
                     for k, v in collate(tokenizer, task, chunk, cfg.max_length).items()}
            with autocast(device):
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_value = float(loss.detach())
            done = step + 1
            if checkpoint_dir is not None and done % cfg.checkpoint_every == 0 and done < total:
                _save_checkpoint(checkpoint_dir, done, model, optimizer, scheduler)
            on_step(done, total, loss_value)
    except torch.OutOfMemoryError as exc:
        raise ResourceExhausted(f"out of memory while training: {exc}") from exc
    model.eval()
    return TrainOutcome(steps=total, resumed_from=start, last_loss=loss_value)


def _save_checkpoint(
    directory: Path, step: int, model: Any, optimizer: Any, scheduler: Any
) -> None:
    import torch
    from safetensors.torch import save_model

    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".tmp-{os.getpid()}"
    tmp.mkdir(exist_ok=True)
    save_model(model, str(tmp / "model.safetensors"))  # handles tied weights (GPT-2)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
               tmp / "optimizer.pt")
    (tmp / _STATE).write_text(json.dumps({"step": step}))
    final = directory / "latest"
    old = directory / ".old"
    if final.exists():
        os.rename(final, old)
    os.rename(tmp, final)  # the checkpoint appears whole or not at all
    if old.exists():
        import shutil

        shutil.rmtree(old)


def _load_checkpoint(directory: Path | None, model: Any, optimizer: Any, scheduler: Any) -> int:
    import torch
    from safetensors.torch import load_model

    if directory is None:
        return 0
    latest = directory / "latest"
    if not (latest / _STATE).is_file():
        latest = directory / ".old"  # a crash between the two renames
        if not (latest / _STATE).is_file():
            return 0
    load_model(model, str(latest / "model.safetensors"))
    # weights_only: our own file, still never a full unpickle
    state = torch.load(latest / "optimizer.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(json.loads((latest / _STATE).read_text())["step"])
