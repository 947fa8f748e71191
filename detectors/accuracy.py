"""Quality on joined labels: accuracy and macro F1 (classifiers) or mean rating (generators),
overall and per segment, with the best-to-worst segment gap as its own statistic."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from detectors.result import DetectorResult

Estimate = tuple[float, float]  # (value, standard error)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> Estimate:
    p = float(np.mean(y_true == y_pred))
    return p, float(np.sqrt(p * (1 - p) / y_true.size))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> Estimate:
    """Unweighted mean of per-class F1 over the classes seen in either array.

    The standard error is the usual approximation: each class's F1 treated as a proportion
    over that class's support (mean of true and predicted counts).
    """
    classes, t_idx = np.unique(np.concatenate([y_true, y_pred]), return_inverse=True)
    k = classes.size
    t, p = t_idx[: y_true.size], t_idx[y_true.size :]
    tp = np.bincount(t[t == p], minlength=k).astype(np.float64)
    n_true = np.bincount(t, minlength=k).astype(np.float64)
    n_pred = np.bincount(p, minlength=k).astype(np.float64)
    support = (n_true + n_pred) / 2
    f1 = np.divide(2 * tp, n_true + n_pred, out=np.zeros(k), where=support > 0)
    var = f1 * (1 - f1) / np.maximum(support, 1)
    return float(f1.mean()), float(np.sqrt(var.sum()) / k)


def mean_rating(rating: np.ndarray, _unused: np.ndarray | None = None) -> Estimate:
    std = float(rating.std(ddof=1)) if rating.size > 1 else 0.0
    return float(rating.mean()), std / np.sqrt(rating.size)


class AccuracyDetector:
    """Each metric against ``floors[metric]`` and against the reference's value - ``tolerance``.

    The floor is lowered by ``margin_z`` standard errors of the current estimate, the
    reference comparison by ``margin_z`` standard errors of the difference (the reference's
    value is an estimate too); the result's threshold is the bound actually used, so that
    few labels never cry wolf. Below
    ``min_labels`` joined labels there is no verdict (INSUFFICIENT), and the reference
    comparison needs as many labels in the reference. With segments, each segment with at
    least ``min_labels_per_segment`` labels gets the same results, and "<metric>_segment_gap"
    (best minus worst segment) is judged against ``segment_gap_max`` plus its own margin.
    """

    name = "accuracy"

    def __init__(
        self,
        task: str = "sequence-classification",
        floors: dict[str, float] | None = None,
        tolerance: float = 0.05,
        margin_z: float = 4.0,
        min_labels: int = 200,
        min_labels_per_segment: int = 100,
        segment_gap_max: float = 0.15,
    ) -> None:
        metrics: dict[str, dict[str, Callable[..., Estimate]]] = {
            "sequence-classification": {"accuracy": accuracy, "macro_f1": macro_f1},
            "causal-lm": {"mean_rating": mean_rating},
        }
        if task not in metrics:
            raise ValueError(f"task must be one of {sorted(metrics)}, got {task!r}")
        self.metrics = metrics[task]
        self.floors = {k: v for k, v in (floors or {}).items() if v is not None}
        for metric, floor in self.floors.items():
            if metric not in self.metrics:
                raise ValueError(f"floor for unknown metric {metric!r} of a {task} model")
            if not 0 <= floor <= 1:
                raise ValueError(f"floor of {metric} must be in [0, 1], got {floor}")
        for label, value in (("tolerance", tolerance), ("segment_gap_max", segment_gap_max)):
            if not 0 <= value <= 1:
                raise ValueError(f"{label} must be in [0, 1], got {value}")
        if margin_z < 0:
            raise ValueError(f"margin_z must be >= 0, got {margin_z}")
        if min_labels < 1 or min_labels_per_segment < 1:
            raise ValueError("min_labels and min_labels_per_segment must be >= 1")
        self.task, self.tolerance, self.margin_z = task, tolerance, margin_z
        self.min_labels, self.min_per_segment = min_labels, min_labels_per_segment
        self.segment_gap_max = segment_gap_max

    def evaluate(
        self,
        reference: tuple[np.ndarray, np.ndarray | None],
        current: tuple[np.ndarray, np.ndarray | None],
        current_segments: np.ndarray | None = None,
        reference_segments: np.ndarray | None = None,
    ) -> tuple[DetectorResult, ...]:
        """``reference`` and ``current`` are (truth, prediction) for classifiers and
        (rating, None) for generators; unlabelled rows (None/NaN truth) are skipped. A segment
        is compared with the same segment of the reference when ``reference_segments`` is
        given, else with the whole reference."""
        ref_truth, ref_pred = _labelled(*reference)
        cur_truth, cur_pred = _labelled(*current)
        ref_values = {m: f(ref_truth, ref_pred) if ref_truth.size >= self.min_labels else None
                      for m, f in self.metrics.items()}
        results = list(self._judge(ref_values, ref_truth.size, cur_truth, cur_pred,
                                   self.min_labels, None))
        if current_segments is not None:
            results += self._segments(reference, reference_segments, ref_values, current,
                                      current_segments)
        return tuple(results)

    def _judge(self, ref_values: dict[str, Estimate | None], n_ref: int, truth: np.ndarray,
               pred: np.ndarray | None, min_labels: int, segment: str | None,
               ) -> list[DetectorResult]:
        out = []
        n = int(truth.size)
        for metric, f in self.metrics.items():
            estimate = f(truth, pred) if n >= min_labels else None
            ref = ref_values[metric]
            # (name, bound, the bound's own standard error: the reference value is an estimate)
            checks = [(f"{metric}_vs_reference", None if ref is None else ref[0] - self.tolerance,
                       0.0 if ref is None else ref[1])]
            if metric in self.floors:
                checks.insert(0, (metric, self.floors[metric], 0.0))
            for name, bound, bound_se in checks:
                if estimate is None or bound is None:  # too few labels here or in the reference
                    out.append(DetectorResult.insufficient(
                        self.name, name, float("nan") if bound is None else bound, "below",
                        n_ref, n, segment=segment))
                else:
                    margin = self.margin_z * float(np.hypot(estimate[1], bound_se))
                    out.append(DetectorResult.judge(
                        self.name, name, estimate[0], bound - margin, "below", n_ref, n,
                        segment=segment))
        return out

    def _segments(self, reference: tuple[np.ndarray, np.ndarray | None],
                  reference_segments: np.ndarray | None, ref_values: dict[str, Estimate | None],
                  current: tuple[np.ndarray, np.ndarray | None], segments: np.ndarray,
                  ) -> list[DetectorResult]:
        n_ref = int(_label_mask(np.asarray(reference[0])).sum())
        truth, pred = current
        truth = np.asarray(truth)
        segments = np.asarray(segments)
        if segments.shape != truth.shape:
            raise ValueError(f"segments ({segments.shape}) and labels ({truth.shape}) differ")
        keep = _label_mask(truth) & ~pd.isna(segments)  # a row with no segment is in none
        out: list[DetectorResult] = []
        per_segment: dict[str, dict[str, Estimate]] = {}
        names = segments.astype(str)
        for seg in sorted(set(names[keep])):
            mask = keep & (names == seg)
            seg_truth, seg_pred = _labelled(truth[mask], None if pred is None else
                                            np.asarray(pred)[mask])
            seg_ref, seg_n_ref = ref_values, n_ref
            if reference_segments is not None:
                seg_ref, seg_n_ref = self._reference_values(reference, reference_segments, seg)
            out += self._judge(seg_ref, seg_n_ref, seg_truth, seg_pred, self.min_per_segment,
                               seg)
            if seg_truth.size >= self.min_per_segment:
                per_segment[seg] = {m: f(seg_truth, seg_pred) for m, f in self.metrics.items()}
        for metric in self.metrics:
            name = f"{metric}_segment_gap"
            if len(per_segment) < 2:
                out.append(DetectorResult.insufficient(
                    self.name, name, self.segment_gap_max, "above", n_ref, int(keep.sum())))
                continue
            best = max(per_segment.values(), key=lambda e: e[metric][0])[metric]
            worst = min(per_segment.values(), key=lambda e: e[metric][0])[metric]
            margin = self.margin_z * float(np.hypot(best[1], worst[1]))
            out.append(DetectorResult.judge(
                self.name, name, best[0] - worst[0], self.segment_gap_max + margin, "above",
                n_ref, int(keep.sum())))
        return out

    def _reference_values(self, reference: tuple[np.ndarray, np.ndarray | None],
                          segments: np.ndarray, seg: str) -> tuple[dict[str, Estimate | None], int]:
        mask = np.asarray(segments).astype(str) == seg
        pred = None if reference[1] is None else np.asarray(reference[1])[mask]
        truth, pred = _labelled(np.asarray(reference[0])[mask], pred)
        enough = truth.size >= self.min_per_segment
        return {m: f(truth, pred) if enough else None for m, f in self.metrics.items()}, truth.size


def _label_mask(truth: np.ndarray) -> np.ndarray:
    """Rows that have a label: not None, not NaN (a window holds unlabelled rows too)."""
    return ~pd.isna(truth)


def _labelled(truth: np.ndarray, pred: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    truth = np.asarray(truth)
    keep = _label_mask(truth)
    if pred is None:
        return truth[keep].astype(np.float64), None
    return truth[keep].astype(str), np.asarray(pred)[keep].astype(str)
