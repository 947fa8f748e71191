"""Evidently's statistical tests called directly, with the meaning of each score made explicit.

Evidently picks a default test by window size and its score is a p-value for some tests and a
distance for others; here every method is named by the caller and carries its direction.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import numpy as np

ColumnKind = Literal["numerical", "categorical"]

# name -> (what the score is, which column kinds accept it). "pvalue" breaches below the
# threshold, "distance" breaches above it. Names are Evidently's registry names.
_PVALUE = "pvalue"
_DISTANCE = "distance"
METHODS: dict[str, tuple[str, frozenset[str]]] = {
    "ks": (_PVALUE, frozenset({"numerical"})),
    "anderson": (_PVALUE, frozenset({"numerical"})),
    "cramer_von_mises": (_PVALUE, frozenset({"numerical"})),
    "mannw": (_PVALUE, frozenset({"numerical"})),
    "t_test": (_PVALUE, frozenset({"numerical"})),
    "es": (_PVALUE, frozenset({"numerical"})),
    "empirical_mmd": (_PVALUE, frozenset({"numerical"})),
    "chisquare": (_PVALUE, frozenset({"categorical"})),
    "z": (_PVALUE, frozenset({"categorical"})),
    "g_test": (_PVALUE, frozenset({"categorical"})),
    "fisher_exact": (_PVALUE, frozenset({"categorical"})),
    "TVD": (_PVALUE, frozenset({"categorical"})),
    "wasserstein": (_DISTANCE, frozenset({"numerical"})),
    "ed": (_DISTANCE, frozenset({"numerical"})),
    "psi": (_DISTANCE, frozenset({"numerical", "categorical"})),
    "jensenshannon": (_DISTANCE, frozenset({"numerical", "categorical"})),
    "kl_div": (_DISTANCE, frozenset({"numerical", "categorical"})),
    "hellinger": (_DISTANCE, frozenset({"numerical", "categorical"})),
}

EMBEDDING_METHODS = ("distance", "model", "ratio", "mmd")


def is_pvalue(method: str) -> bool:
    return METHODS[method][0] == _PVALUE


def direction_of(method: str) -> str:
    """"below" for a p-value (small means drift), "above" for a distance."""
    return "below" if is_pvalue(method) else "above"


def check_method(method: str, kind: str) -> None:
    """ValueError unless ``method`` is a known test that accepts a ``kind`` column."""
    if method not in METHODS:
        raise ValueError(f"unknown drift method {method!r}; known: {sorted(METHODS)}")
    if kind not in METHODS[method][1]:
        raise ValueError(f"drift method {method!r} does not accept {kind} columns")


@cache
def load_evidently() -> Any:
    # Importing evidently costs ~3-4 s (its package root imports the whole library), so it is
    # paid on the first drift test, never when the daemon or the CLI merely imports detectors.
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from evidently.legacy.calculations import stattests
    from evidently.legacy.core import ColumnType

    return stattests, ColumnType


@dataclass(frozen=True, slots=True)
class Score:
    score: float
    direction: str


def column_score(
    method: str, kind: str, reference: np.ndarray, current: np.ndarray, threshold: float
) -> Score:
    """Evidently's ``method`` on one column (NaN already dropped by the caller)."""
    import pandas as pd

    stattests, column_type = load_evidently()
    test = stattests.get_stattest(None, None, _column_type(column_type, kind), method)
    result = test(
        pd.Series(reference, copy=False), pd.Series(current, copy=False),
        _column_type(column_type, kind), threshold,
    )
    return Score(float(result.drift_score), direction_of(method))


def _column_type(column_type: Any, kind: str) -> Any:
    return column_type.Numerical if kind == "numerical" else column_type.Categorical


def embedding_score(
    method: str,
    reference: np.ndarray,
    current: np.ndarray,
    threshold: float,
    dist: str = "euclidean",
    pca_components: int | None = None,
) -> Score:
    """Evidently's embedding drift ``method`` (distance | model | ratio | mmd); all breach above.

    Bootstrap variants are not offered: they compare against a percentile Evidently does not
    return, so the result could not carry its real threshold (and they cost ~100 passes).
    """
    import pandas as pd

    load_evidently()
    from evidently.legacy.metrics.data_drift import embedding_drift_methods as edm

    if method == "distance":
        drift = edm.DistanceDriftMethod(
            dist=dist, threshold=threshold, pca_components=pca_components
        )
    elif method == "model":
        drift = edm.ModelDriftMethod(threshold=threshold, pca_components=pca_components)
    elif method == "ratio":
        drift = edm.RatioDriftMethod(threshold=threshold, pca_components=pca_components)
    elif method == "mmd":
        drift = edm.MMDDriftMethod(threshold=threshold, pca_components=pca_components)
    else:
        raise ValueError(f"unknown embedding drift method {method!r}; known: {EMBEDDING_METHODS}")
    # Fresh frames: the model method adds a "target" column to what it is given.
    score, _drifted, _name = drift(pd.DataFrame(current), pd.DataFrame(reference))
    return Score(float(score), "above")
