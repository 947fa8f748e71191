"""An evaluation sink that adds each model's evaluations to a local Evidently workspace (one
project per model), so ``evidently ui --workspace PATH`` shows their history; breach reports too.

Every detector statistic of a pass becomes an Evidently ``MeanValue`` of a one-row column
holding that statistic, with the detector's threshold as the metric's test (``lte`` for
"above" breaches, ``gte`` for "below"): Evidently's own metric and test types, so the UI
plots each statistic over time and shows the verdicts without importing anything of ours.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daemon.monitor.evaluation import Evaluation
from detectors.result import Verdict

log = logging.getLogger(__name__)
RUN_TAG = "evaluation"


class EvidentlyWorkspaceSink:
    """Called where the passes run (``detector_pass``: the evaluation worker) after each pass
    (``__call__``) and after each breach report (``add_report``); ``workspaces`` maps a model
    name to its workspace directory."""

    def __init__(self, workspaces: Mapping[str, Path]) -> None:
        self.workspaces = {model: Path(path) for model, path in workspaces.items()}
        self._open: dict[Path, Any] = {}  # path -> evidently.ui.workspace.Workspace
        self._projects: dict[str, Any] = {}  # model -> project id
        self._lock = threading.Lock()  # evaluator threads of several models share a workspace

    def __call__(self, evaluation: Evaluation) -> None:
        if evaluation.model not in self.workspaces:
            return
        snapshot = evaluation_snapshot(evaluation)
        if snapshot is not None:
            self._add(evaluation.model, snapshot)

    def add_report(self, evaluation: Evaluation, snapshot: Any) -> None:
        """The breach report (the full drift Report the HTML was rendered from)."""
        if evaluation.model in self.workspaces:
            self._add(evaluation.model, snapshot)

    def _add(self, model: str, snapshot: Any) -> None:
        with self._lock:
            workspace = self._workspace(self.workspaces[model])
            project = self._projects.get(model)
            if project is None:
                found = workspace.search_project(model)
                project = (found[0] if found else workspace.create_project(
                    model, description=f"lifeguard evaluations of {model}")).id
                self._projects[model] = project
            workspace.add_run(project, snapshot)

    def _workspace(self, path: Path) -> Any:
        if path not in self._open:
            from detectors.stattests import load_evidently

            load_evidently()  # telemetry off (DO_NOT_TRACK) before evidently's first import
            from evidently.ui.workspace import Workspace

            path.mkdir(parents=True, exist_ok=True)
            self._open[path] = Workspace.create(str(path))
        return self._open[path]


def evaluation_snapshot(evaluation: Evaluation) -> Any:
    """An Evidently ``Snapshot`` of one evaluation's decided statistics (None if it has none);
    undecided results (too few samples) are kept in the metadata."""
    import pandas as pd

    from detectors.stattests import load_evidently

    load_evidently()
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import MeanValue
    from evidently.tests import gte, lte

    values: dict[str, float] = {}
    metrics = []
    undecided = []
    for result in evaluation.results:
        if (result.verdict is Verdict.INSUFFICIENT or result.statistic is None
                or not math.isfinite(result.statistic) or result.key in values):
            undecided.append(result.key)
            continue
        values[result.key] = result.statistic
        test = lte if result.direction == "above" else gte
        metrics.append(MeanValue(column=result.key, tests=[test(result.threshold)]))
    if not metrics:
        return None
    frame = pd.DataFrame({key: [value] for key, value in values.items()})
    dataset = Dataset.from_pandas(frame, data_definition=DataDefinition(
        numerical_columns=list(values)))
    metadata: dict[str, Any] = {
        "evaluation_id": evaluation.id, "model": evaluation.model,
        "model_version": evaluation.model_version,
        "window_end_offset": str(evaluation.window_end_offset),
        "breaches": ",".join(r.key for r in evaluation.breaches)}
    if undecided:
        metadata["insufficient_data"] = ",".join(undecided)
    tags = [RUN_TAG, f"version:{evaluation.model_version}",
            "breach" if evaluation.breached else "ok"]
    return Report(metrics).run(dataset, None, timestamp=datetime.fromtimestamp(evaluation.ts, UTC),
                               name=f"{evaluation.model} v{evaluation.model_version}: "
                                    f"{evaluation.id}", metadata=metadata, tags=tags)
