"""A generator's answers scored against the corrected references feedback brings (ROUGE-L F1
by default), judged against a floor and against the reference window's score."""

from __future__ import annotations

import numpy as np

from detectors.result import DetectorResult
from lifeguard.scores import Scorer, reference_scores


class ReferenceScoreDetector:
    """The mean reference score of the current window against ``floor`` (if set) and against
    the reference window's mean minus ``tolerance``.

    The floor is lowered by ``margin_z`` standard errors of the current mean; the comparison
    with the reference window by ``margin_z`` standard errors of the difference (both means
    are estimates from a few hundred references at best). The result's threshold is the
    lowered bound. Below ``min_references`` scored rows on a side there is no verdict.
    Scores are per row in [0, 1], NaN where a row has no reference (skipped).
    """

    name = "quality"

    def __init__(self, floor: float | None = None, tolerance: float = 0.05,
                 margin_z: float = 4.0, min_references: int = 100) -> None:
        if floor is not None and not 0 <= floor <= 1:
            raise ValueError(f"floor must be in [0, 1], got {floor}")
        if not 0 <= tolerance <= 1:
            raise ValueError(f"tolerance must be in [0, 1], got {tolerance}")
        if margin_z < 0:
            raise ValueError(f"margin_z must be >= 0, got {margin_z}")
        if min_references < 2:
            raise ValueError(f"min_references must be >= 2, got {min_references}")
        self.floor, self.tolerance, self.margin_z = floor, tolerance, margin_z
        self.min_references = min_references

    def evaluate(self, reference: np.ndarray, current: np.ndarray) -> tuple[DetectorResult, ...]:
        ref, cur = _scored(reference), _scored(current)
        n_ref, n = int(ref.size), int(cur.size)
        cur_ok, ref_ok = n >= self.min_references, n_ref >= self.min_references
        out: list[DetectorResult] = []
        if self.floor is not None:
            if cur_ok:
                out.append(DetectorResult.judge(
                    self.name, "reference_score", float(cur.mean()),
                    self.floor - self.margin_z * _se(cur), "below", n_ref, n))
            else:
                out.append(DetectorResult.insufficient(
                    self.name, "reference_score", self.floor, "below", n_ref, n))
        metric = "reference_score_vs_reference"
        if cur_ok and ref_ok:
            bound = (float(ref.mean()) - self.tolerance
                     - self.margin_z * float(np.hypot(_se(cur), _se(ref))))
            out.append(DetectorResult.judge(self.name, metric, float(cur.mean()), bound,
                                            "below", n_ref, n))
        else:
            bound = float(ref.mean()) - self.tolerance if ref.size else float("nan")
            out.append(DetectorResult.insufficient(self.name, metric, bound, "below", n_ref, n))
        return tuple(out)


def score_pairs(outputs: np.ndarray, references: np.ndarray,
                scorer: Scorer = "rougeL") -> np.ndarray:
    """Per row: the score of the output against its reference, NaN where either is missing."""
    outputs = np.asarray(outputs, dtype=object)
    references = np.asarray(references, dtype=object)
    both = [i for i, (o, r) in enumerate(zip(outputs, references, strict=True))
            if isinstance(o, str) and isinstance(r, str)]
    out = np.full(outputs.size, np.nan)
    if both:
        out[both] = reference_scores([outputs[i] for i in both], [references[i] for i in both],
                                     scorer)
    return out


def _scored(scores: np.ndarray) -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64)
    return values[np.isfinite(values)]


def _se(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) / np.sqrt(values.size) if values.size > 1 else 0.0
