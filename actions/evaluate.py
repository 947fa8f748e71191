"""The gate (evaluate step): candidate versus champion on the snapshot's holdout, which no
fine-tune trains on. Classifiers: accuracy >= champion + margin and >= floor; generators:
perplexity on the references <= champion's * (1 - margin) (and <= an optional ceiling)."""

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
from actions.snapshot import Row, classifier_pairs, generator_pairs, read_snapshot, split_holdout
from actions.torch_models import SEQ_CLS, LoadedModel, load_any

NAME = "evaluate"
VERSION = 1


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
    """Mean over rows of each target's mean NLL given its prompt."""
    values = []
    for start in range(0, len(pairs), batch):
        chunk = pairs[start : start + batch]
        values.append(model.scorer.nll([t for _, t in chunk], [p for p, _ in chunk]))
    return float(np.mean(np.concatenate(values)))


def score(model: LoadedModel, rows: Sequence[Row], min_rows: int) -> tuple[str, float, int]:
    """(metric name, value, rows scored) on ``rows`` for the model's task."""
    if model.task == SEQ_CLS:
        pairs, _ = classifier_pairs(rows, model.labels)
        _require(len(pairs), min_rows)
        return "accuracy", accuracy(model, pairs), len(pairs)
    gen, _ = generator_pairs(rows)
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


def decide(metric: str, candidate: float, champion: float | None, ctx: StepContext,
           rows: int) -> GateVerdict:
    p = ctx.policy
    if metric == "accuracy":
        need = max(p.gate_floor, champion + p.gate_margin if champion is not None else 0.0)
        rule = (f"accuracy >= max(floor {p.gate_floor:g}, champion {champion} + margin "
                f"{p.gate_margin:g}) = {need:.4f}")
        passed = candidate >= need - 1e-12
    else:
        bound = champion * (1 - p.perplexity_margin) if champion is not None else math.inf
        if p.perplexity_ceiling is not None:
            bound = min(bound, p.perplexity_ceiling)
        rule = (f"perplexity <= min(champion {champion} * (1 - {p.perplexity_margin:g}), "
                f"ceiling {p.perplexity_ceiling}) = {bound:.4f}")
        # strictly better when there is a champion: an equal model is not worth a rollout
        passed = candidate < bound if champion is not None else candidate <= bound
    return GateVerdict(passed, metric, round(candidate, 6),
                       None if champion is None else round(champion, 6), rule, rows)


def run(ctx: StepContext) -> StepResult:
    model_dir = ctx.input_model()
    inputs = {
        "candidate": input_digest(model_dir),
        "champion": input_digest(ctx.champion_dir),
        "snapshot": input_digest(ctx.snapshot),
        "policy": ctx.policy.model_dump(include={
            "holdout_fraction", "min_holdout_rows", "gate_margin", "gate_floor",
            "perplexity_margin", "perplexity_ceiling"}),
    }
    key = step_key(NAME, VERSION, inputs)

    def build(out: Path) -> dict[str, Any]:
        rows = holdout_rows(ctx)
        candidate = load_any(model_dir, ctx.device, ctx.threads)
        metric, cand, n = score(candidate, rows, ctx.policy.min_holdout_rows)
        champ = None
        if ctx.champion_dir is not None:
            champion = load_any(ctx.champion_dir, ctx.device, ctx.threads)
            if champion.task != candidate.task or champion.labels != candidate.labels:
                raise BadInput("champion and candidate differ in task or labels")
            champ = score(champion, rows, ctx.policy.min_holdout_rows)[1]
        verdict = asdict(decide(metric, cand, champ, ctx, n))
        (out / "gate.json").write_text(json.dumps(verdict, indent=2) + "\n")
        return verdict

    pub = publish(ctx.output_dir, NAME, key, ctx.run_id, inputs, build)
    # the model that goes on is the candidate; the gate's own folder holds its verdict
    result = step_result(NAME, pub, model_dir)
    verdict = result.evidence
    if not verdict["passed"]:  # a cached failing verdict fails again: nothing gets through
        raise GateFailed(
            f"gate failed: candidate {verdict['metric']} {verdict['candidate']} vs champion "
            f"{verdict['champion']} ({verdict['rule']})", verdict,
        )
    return result
