"""The gate (evaluate step): candidate versus champion on the snapshot's holdout, which no
fine-tune trains on. Classifiers: accuracy >= champion + margin and >= floor. Generators: the
token-weighted perplexity on the references and ROUGE-L F1 of greedy answers against them; the
candidate may be worse on neither beyond its margin, must clear both floors, and must be better
on at least one (an equal model is not worth a rollout).

ROUGE-L is ``lifeguard.scores``' (Google's ``rouge-score`` on lower-cased ``\\w+`` tokens): the
one the daemon's quality detector and canary judge score with, so the gate agrees with them."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from actions.artifacts import input_digest, publish, step_key, step_result
from actions.contract import StepContext, StepResult
from actions.errors import BadInput, GateFailed
from actions.prompts import reference_pairs
from actions.settings import ActionPolicy
from actions.snapshot import Row, classifier_pairs, read_snapshot, split_holdout
from actions.torch_models import SEQ_CLS, LoadedModel, load_any
from deploy.text_scoring import encode_lm_pair
from lifeguard.scores import reference_scores

NAME = "evaluate"
# 2: generators gated on perplexity and ROUGE-L; 3: the daemon's ROUGE-L (lifeguard.scores)
VERSION = 3


def holdout_rows(ctx: StepContext) -> list[Row]:
    if ctx.snapshot is None:
        raise BadInput(f"{NAME} needs a data snapshot")
    _, holdout = split_holdout(read_snapshot(ctx.snapshot), ctx.policy.holdout_fraction)
    return holdout


def accuracy(model: LoadedModel, pairs: Sequence[tuple[str, int]], batch: int = 64) -> float:
    hits = 0
    for start in range(0, len(pairs), batch):
        chunk = pairs[start : start + batch]
        logits = model.scorer.logits([t for t, _ in chunk])
        hits += int((logits.argmax(axis=-1) == np.array([y for _, y in chunk])).sum())
    return hits / len(pairs)


def mean_nll(model: LoadedModel, pairs: Sequence[tuple[str, str]], batch: int = 32) -> float:
    """Token-weighted mean NLL of the targets given their prompts: a long answer counts for
    its tokens, not as one row."""
    tokenizer, limit = model.scorer.tokenizer, model.scorer.max_length  # type: ignore[attr-defined]
    values, weights = [], []
    for start in range(0, len(pairs), batch):
        chunk = pairs[start : start + batch]
        values.append(model.scorer.nll([t for _, t in chunk], [p for p, _ in chunk]))
        for prompt, target in chunk:
            row, first = encode_lm_pair(tokenizer, prompt, target, limit)
            weights.append(max(0, len(row) - max(1, first)))
    nll, w = np.concatenate(values), np.asarray(weights, dtype=np.float64)
    keep = np.isfinite(nll) & (w > 0)
    return float((nll[keep] * w[keep]).sum() / max(w[keep].sum(), 1.0))


def answer_score(model: LoadedModel, pairs: Sequence[tuple[str, str]], new_tokens: int,
                 batch: int = 16) -> float:
    """Mean ROUGE-L F1 of the model's greedy answers against the targets."""
    scores = []
    for start in range(0, len(pairs), batch):
        chunk = pairs[start : start + batch]
        answers = model.scorer.generate([p for p, _ in chunk], new_tokens)
        scores.append(reference_scores(answers, [t for _, t in chunk], "rougeL"))
    return float(np.concatenate(scores).mean())


@dataclass(frozen=True)
class GeneratorScore:
    perplexity: float
    rouge_l: float
    rows: int
    targets: str  # "references", or "references+rated" when references were too few


def generator_score(model: LoadedModel, rows: Sequence[Row], policy: ActionPolicy
                    ) -> GeneratorScore:
    tokenizer = model.scorer.tokenizer  # type: ignore[attr-defined]
    pairs, targets = reference_pairs(rows, tokenizer, policy.min_holdout_rows)
    _require(len(pairs), policy.min_holdout_rows)
    return GeneratorScore(math.exp(mean_nll(model, pairs)),
                          answer_score(model, pairs, policy.gate_new_tokens), len(pairs), targets)


def score(model: LoadedModel, rows: Sequence[Row], min_rows: int) -> tuple[str, float, int]:
    """(metric name, value, rows scored) on ``rows`` for the model's task: accuracy, or the
    token-weighted perplexity (what quantize's guard compares)."""
    if model.task == SEQ_CLS:
        pairs, _ = classifier_pairs(rows, model.labels)
        _require(len(pairs), min_rows)
        return "accuracy", accuracy(model, pairs), len(pairs)
    gen, _ = reference_pairs(rows, model.scorer.tokenizer, min_rows)  # type: ignore[attr-defined]
    _require(len(gen), min_rows)
    return "perplexity", math.exp(mean_nll(model, gen)), len(gen)


def _require(n: int, min_rows: int) -> None:
    if n < min_rows:
        raise BadInput(f"{n} usable holdout rows, policy needs {min_rows}")


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    metric: str  # "accuracy" (higher is better) or "perplexity" (lower is better)
    candidate: float
    champion: float | None  # None: no champion yet, only the floor/ceiling applies
    rule: str
    rows: int
    # generators: the reference score beside perplexity, and what it was scored against
    candidate_rouge_l: float | None = None
    champion_rouge_l: float | None = None
    targets: str | None = None


def decide(metric: str, candidate: float, champion: float | None, ctx: StepContext,
           rows: int) -> GateVerdict:
    """The classifier's rule (accuracy)."""
    p = ctx.policy
    need = max(p.gate_floor, champion + p.gate_margin if champion is not None else 0.0)
    rule = (f"accuracy >= max(floor {p.gate_floor:g}, champion {champion} + margin "
            f"{p.gate_margin:g}) = {need:.4f}")
    passed = candidate >= need - 1e-12
    return GateVerdict(passed, metric, round(candidate, 6),
                       None if champion is None else round(champion, 6), rule, rows)


def decide_generator(cand: GeneratorScore, champ: GeneratorScore | None,
                     policy: ActionPolicy) -> GateVerdict:
    """Not worse than the champion on perplexity or ROUGE-L beyond the margins, above both
    floors, and better on at least one of them."""
    p = policy
    ppl_bound = math.inf if champ is None else champ.perplexity * (1 + p.perplexity_margin)
    if p.perplexity_ceiling is not None:
        ppl_bound = min(ppl_bound, p.perplexity_ceiling)
    score_need = p.score_floor if champ is None else max(p.score_floor,
                                                         champ.rouge_l - p.score_margin)
    checks = [cand.perplexity <= ppl_bound, cand.rouge_l >= score_need - 1e-12]
    if champ is not None:
        checks.append(cand.perplexity < champ.perplexity or cand.rouge_l > champ.rouge_l)
    rule = (f"perplexity <= min(champion * (1 + {p.perplexity_margin:g}), ceiling "
            f"{p.perplexity_ceiling}) = {ppl_bound:.4f} and rouge_l >= max(floor "
            f"{p.score_floor:g}, champion - {p.score_margin:g}) = {score_need:.4f}"
            + (" and better than the champion on one" if champ is not None else ""))
    return GateVerdict(
        all(checks), "perplexity", round(cand.perplexity, 6),
        None if champ is None else round(champ.perplexity, 6), rule, cand.rows,
        candidate_rouge_l=round(cand.rouge_l, 6),
        champion_rouge_l=None if champ is None else round(champ.rouge_l, 6),
        targets=cand.targets)


def run(ctx: StepContext) -> StepResult:
    model_dir = ctx.input_model()
    inputs = {
        "candidate": input_digest(model_dir),
        "champion": input_digest(ctx.champion_dir),
        "snapshot": input_digest(ctx.snapshot),
        "policy": ctx.policy.model_dump(include={
            "holdout_fraction", "min_holdout_rows", "gate_margin", "gate_floor",
            "perplexity_margin", "perplexity_ceiling", "score_margin", "score_floor",
            "gate_new_tokens"}),
    }
    key = step_key(NAME, VERSION, inputs)

    def build(out: Path) -> dict[str, Any]:
        rows = holdout_rows(ctx)
        candidate = load_any(model_dir, ctx.device, ctx.threads)
        champion = None
        if ctx.champion_dir is not None:
            champion = load_any(ctx.champion_dir, ctx.device, ctx.threads)
            if champion.task != candidate.task or champion.labels != candidate.labels:
                raise BadInput("champion and candidate differ in task or labels")
        if candidate.task == SEQ_CLS:
            metric, cand, n = score(candidate, rows, ctx.policy.min_holdout_rows)
            champ = (None if champion is None
                     else score(champion, rows, ctx.policy.min_holdout_rows)[1])
            verdict = asdict(decide(metric, cand, champ, ctx, n))
        else:
            verdict = asdict(decide_generator(
                generator_score(candidate, rows, ctx.policy),
                None if champion is None else generator_score(champion, rows, ctx.policy),
                ctx.policy))
        (out / "gate.json").write_text(json.dumps(verdict, indent=2) + "\n")
        return verdict

    pub = publish(ctx.output_dir, NAME, key, ctx.run_id, inputs, build)
    # the model that goes on is the candidate; the gate's own folder holds its verdict
    result = step_result(NAME, pub, model_dir)
    verdict = result.evidence
    if not verdict["passed"]:  # a cached failing verdict fails again: nothing gets through
        raise GateFailed(
            f"gate failed: candidate {verdict['metric']} {verdict['candidate']} vs champion "
            f"{verdict['champion']}{_rouge_words(verdict)} ({verdict['rule']})", verdict,
        )
    return result


def _rouge_words(verdict: dict[str, Any] | Any) -> str:
    if verdict.get("candidate_rouge_l") is None:
        return ""
    return (f", rouge_l {verdict['candidate_rouge_l']} vs champion "
            f"{verdict['champion_rouge_l']}")
