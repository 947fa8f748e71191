"""How a generator's answer compares with a corrected reference (ROUGE-L F1 or token F1), and
its time per output token: shared by the detectors and both canary judges, so they agree."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from functools import cache
from typing import Any, Literal

import numpy as np

Scorer = Literal["rougeL", "token_f1"]
_TOKEN = re.compile(r"\w+")


class _UnicodeTokenizer:
    """Lower-cased ``\\w+`` tokens. rouge-score's default tokenizer keeps [a-z0-9] only, so a
    French or Chinese answer would score 0 against its own reference."""

    def tokenize(self, text: str) -> list[str]:
        return _TOKEN.findall(text.lower())


@cache
def _rouge() -> Any:
    # ROUGE-L comes from Google's `rouge-score`, the implementation the summarisation
    # literature reports against (maintained, pure Python: the LCS of two ~100-token answers
    # costs well under a millisecond). Imported on first use: it pulls in nltk.
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(["rougeL"], tokenizer=_UnicodeTokenizer())


def token_f1(output: str, reference: str) -> float:
    """SQuAD's bag-of-tokens F1: order-blind, so cheaper and more lenient than ROUGE-L."""
    out, ref = _TOKEN.findall(output.lower()), _TOKEN.findall(reference.lower())
    if not out or not ref:
        return float(out == ref)
    common = sum((Counter(out) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(out), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def reference_scores(outputs: Sequence[str], references: Sequence[str],
                     scorer: Scorer = "rougeL") -> np.ndarray:
    """One score in [0, 1] per (output, reference) pair: ROUGE-L F1 (longest common
    subsequence of tokens, so word order counts) or token F1. Two empty texts score 1."""
    if len(outputs) != len(references):
        raise ValueError(f"{len(outputs)} outputs but {len(references)} references")
    if scorer == "token_f1":
        return np.fromiter((token_f1(o, r) for o, r in zip(outputs, references, strict=True)),
                           dtype=np.float64, count=len(outputs))
    if scorer != "rougeL":
        raise ValueError(f"scorer must be 'rougeL' or 'token_f1', got {scorer!r}")
    if not outputs:
        return np.empty(0, dtype=np.float64)  # and rouge-score (with nltk) stays unimported
    rouge = _rouge()
    out = np.empty(len(outputs), dtype=np.float64)
    for i, (o, r) in enumerate(zip(outputs, references, strict=True)):
        if not _TOKEN.search(o) and not _TOKEN.search(r):
            out[i] = 1.0
        else:
            out[i] = rouge.score(r, o)["rougeL"].fmeasure  # score(target, prediction)
    return out


def time_per_output_token(latency_ms: np.ndarray, ttft_ms: np.ndarray,
                          tokens_out: np.ndarray) -> np.ndarray:
    """(latency - TTFT) / (tokens_out - 1) in ms per row, for rows with a TTFT and at least
    two tokens: the first token's time is already TTFT (vLLM's and TGI's definition), so
    dividing by tokens_out would flatter short answers. Other rows are dropped."""
    latency = np.asarray(latency_ms, dtype=np.float64)
    ttft = np.asarray(ttft_ms, dtype=np.float64)
    tokens = np.asarray(tokens_out, dtype=np.float64)
    keep = np.isfinite(latency) & np.isfinite(ttft) & np.isfinite(tokens) & (tokens >= 2)
    return np.maximum(latency[keep] - ttft[keep], 0.0) / (tokens[keep] - 1)
