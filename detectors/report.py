"""The full Evidently Report (HTML with plots) for an evaluation that breached: the same
columns, methods and thresholds as the suite's fast pass, so the plots explain the verdict.

Pure: it returns the Evidently snapshot (or its HTML); the caller decides where it is written
(a file, or an Evidently workspace via ``workspace.add_run``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from detectors.columns import feature_column
from detectors.suite import DetectorSuite, PreparedReference, WindowData, _window


def drift_report(suite: DetectorSuite, reference: PreparedReference | WindowData | pd.DataFrame,
                 current: WindowData | pd.DataFrame, *, timestamp: datetime,
                 max_rows: int = 20_000, include_embeddings: bool = False,
                 plot_rows: int = 300, name: str | None = None,
                 metadata: dict[str, str] | None = None, tags: list[str] | None = None) -> Any:
    """An Evidently ``Snapshot`` of every drift test the suite runs, with explicit methods.

    ``timestamp`` is the evaluation's time (detectors read no clock). Each side is thinned to
    ``max_rows`` evenly spaced rows.

    Embedding drift is left out unless ``include_embeddings``: Evidently plots it with a t-SNE
    (fixed 1,000 iterations; 20-50 s on two busy cores even at 300 rows a side, ~1 min at its
    own 2,500). When included, the plot uses ``plot_rows`` a side while the score still uses
    every row. The fast pass's embedding result is the verdict either way.
    """
    if max_rows < 10 or plot_rows < 10:
        raise ValueError(f"max_rows and plot_rows must be >= 10, got {max_rows}, {plot_rows}")
    from detectors.stattests import load_evidently

    load_evidently()  # sets DO_NOT_TRACK before evidently's first import
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import EmbeddingsDrift, ValueDrift
    from evidently.metrics.embeddings import (
        DistanceDriftMethod,
        MMDDriftMethod,
        ModelDriftMethod,
        RatioDriftMethod,
    )

    ref = reference if isinstance(reference, PreparedReference) else suite.prepare(reference)
    cur = _window(current)
    numerical: list[str] = []
    categorical: list[str] = []
    metrics: list[Any] = []
    ref_cols: dict[str, np.ndarray] = {}
    cur_cols: dict[str, np.ndarray] = {}
    current_features = {t.column: suite.current_features(ref, cur.frame, t) for t in suite.texts}
    for text, feature, detector in suite.text_detectors:
        column = feature_column(text.column, feature)
        ref_values = ref.features.get(text.column, {}).get(feature)
        cur_values = current_features[text.column].get(feature)
        if ref_values is None or cur_values is None:
            continue
        ref_cols[column], cur_cols[column] = ref_values, cur_values
        numerical.append(column)
        metrics.append(ValueDrift(column=column, method=detector.method,
                                  threshold=detector.threshold))
    for detector in suite.column_detectors:
        if detector.column not in ref.data.frame or detector.column not in cur.frame:
            continue
        ref_cols[detector.column] = ref.data.frame[detector.column].to_numpy()
        cur_cols[detector.column] = cur.frame[detector.column].to_numpy()
        (numerical if detector.kind == "numerical" else categorical).append(detector.column)
        metrics.append(ValueDrift(column=detector.column, method=detector.method,
                                  threshold=detector.threshold))
    embeddings: dict[str, list[str]] = {}
    methods = {"distance": DistanceDriftMethod, "model": ModelDriftMethod,
               "ratio": RatioDriftMethod, "mmd": MMDDriftMethod}
    for emb in suite.embedding_detectors if include_embeddings else ():
        r, c = ref.data.embeddings.get(emb.column), cur.embeddings.get(emb.column)
        if r is None or c is None:
            continue
        names = [f"{emb.column}.emb{i}" for i in range(np.shape(r)[1])]
        embeddings[emb.column] = names
        for i, n in enumerate(names):
            ref_cols[n], cur_cols[n] = np.asarray(r)[:, i], np.asarray(c)[:, i]
        kwargs: dict[str, Any] = {"threshold": emb.threshold}
        if emb.method == "distance":
            kwargs["dist"] = emb.dist
        metrics.append(EmbeddingsDrift(embeddings_name=emb.column,
                                       drift_method=methods[emb.method](**kwargs)))
    if not metrics:
        raise ValueError("no drift column is present in both windows: nothing to report")
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical,
                                embeddings=embeddings or None)
    datasets = [Dataset.from_pandas(_thin(_frame(cols), max_rows), data_definition=definition)
                for cols in (cur_cols, ref_cols)]
    with _tsne_rows(plot_rows):
        return Report(metrics).run(datasets[0], datasets[1], timestamp=timestamp, name=name,
                                   metadata=metadata, tags=tags)


@contextmanager
def _tsne_rows(rows: int) -> Iterator[None]:
    """Evidently reads its t-SNE sample size from a module constant at call time; lower it
    for one report and put it back (reports are rendered one at a time, by the evaluator)."""
    from evidently.legacy.metrics.data_drift import embeddings_drift

    saved = embeddings_drift.SAMPLE_CONSTANT
    embeddings_drift.SAMPLE_CONSTANT = rows
    try:
        yield
    finally:
        embeddings_drift.SAMPLE_CONSTANT = saved


def render_html(snapshot: Any) -> str:
    """Standalone HTML of a snapshot (what the on-call opens).

    Evidently embeds the report's data as raw ``json.dumps`` inside ``<script>``, and a
    categorical value is whatever a producer sent: ``</script><script>...`` would end the
    data block and run. The JSON is rendered script-safe here (``<``, ``>``, ``&`` and the
    JS line separators as ``\\uXXXX`` escapes, the same value once parsed)."""
    with _script_safe_json():
        return str(snapshot.get_html_str(as_iframe=False))


_SCRIPT_UNSAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                  "\u2028": "\\u2028", "\u2029": "\\u2029"}


def script_safe(text: str) -> str:
    """JSON text that cannot close or open an HTML ``<script>`` element. The characters
    replaced occur only inside JSON strings, where the ``\\uXXXX`` escape means the same."""
    for char, escape in _SCRIPT_UNSAFE.items():
        text = text.replace(char, escape)
    return text


@contextmanager
def _script_safe_json() -> Iterator[None]:
    """Evidently's HTML template calls its module's ``json.dumps`` and
    ``dashboard_info_to_json`` at render time; both are wrapped for one render (reports are
    rendered one at a time, by the evaluator)."""
    import json
    import types

    from evidently.legacy.utils import dashboard

    saved_json, saved_info = dashboard.json, dashboard.dashboard_info_to_json

    def dumps(obj: Any, **kwargs: Any) -> str:
        return script_safe(json.dumps(obj, **kwargs))

    def info_to_json(info: Any) -> str:
        return script_safe(saved_info(info))

    dashboard.json = types.SimpleNamespace(dumps=dumps)  # type: ignore[assignment]
    dashboard.dashboard_info_to_json = info_to_json
    try:
        yield
    finally:
        dashboard.json, dashboard.dashboard_info_to_json = saved_json, saved_info


def _frame(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """Columns of unequal length (the reference's out-of-sample OOV share is half as long) are
    padded with NaN, which Evidently drops per column."""
    n = max(len(v) for v in columns.values())
    return pd.DataFrame({k: pd.Series(v).reindex(range(n)) for k, v in columns.items()})


def _thin(frame: pd.DataFrame, max_rows: int) -> pd.DataFrame:
    if len(frame) <= max_rows:
        return frame
    return frame.iloc[np.linspace(0, len(frame) - 1, max_rows).astype(np.intp)]
