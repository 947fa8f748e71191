"""How text is scored, shared by the ONNX models (deploy.inference) and the PyTorch helpers in
actions, so both runtimes encode, pad and score text the same way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def pad_id(tokenizer: Any) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return int(tokenizer.eos_token_id or 0)


def encode_lm(tokenizer: Any, text: str, max_length: int) -> list[int]:
    """Token ids of ``text`` after a BOS token (so a one-token text still has a prediction)."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    prefix = [int(bos)] if bos is not None else []
    return (prefix + ids)[:max_length]


def encode_lm_pair(
    tokenizer: Any, prompt: str, target: str, max_length: int, eos: bool = False
) -> tuple[list[int], int]:
    """ids of BOS + prompt + target (+ EOS), and the index of the first target token.

    Truncation keeps the end of the prompt, so the target is scored with its nearest context.
    """
    head = encode_lm(tokenizer, prompt, 10**9)
    tail = list(tokenizer(target, add_special_tokens=False)["input_ids"])
    if eos and tokenizer.eos_token_id is not None:
        tail.append(int(tokenizer.eos_token_id))
    tail = tail[: max_length - 1]
    head = head[-(max_length - len(tail)) :]
    start = max(1, len(head))
    return head + tail, start


def pad_right(rows: Sequence[Sequence[int]], pad: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    lengths = [len(r) for r in rows]
    width = max(lengths)
    ids = np.full((len(rows), width), pad, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return ids, mask, lengths


def token_nll(
    logits: np.ndarray, ids: np.ndarray, lengths: Sequence[int], starts: Sequence[int]
) -> np.ndarray:
    """Mean NLL of tokens ``starts[i]..lengths[i]-1`` of each row, each predicted from the left."""
    logits = logits.astype(np.float64)
    logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    out = np.zeros(len(lengths), dtype=np.float64)
    for i, (n, s) in enumerate(zip(lengths, starts, strict=True)):
        pos = np.arange(max(1, s), n)
        if len(pos) == 0:
            out[i] = float("nan")
            continue
        picked = logits[i, pos - 1, ids[i, pos]]
        out[i] = float(np.mean(logz[i, pos - 1] - picked))
    return out
