"""Evaluations in a local Evidently workspace: the evaluator's real path (events -> windows ->
detectors) with ``evaluation.evidently_workspace`` set, read back with Evidently's own API and
through ``evidently ui`` over HTTP."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
from prometheus_client import CollectorRegistry

from daemon.assembly import build_monitoring
from daemon.config import parse_config
from daemon.ingest.batch import PartitionBatch
from daemon.ingest.broker import free_port
from daemon.monitor.evaluation import Evaluation
from tests.test_evaluator import Stream

MODELS = ("m", "n")
WINDOW = 600  # small windows: the point here is where evaluations go, not the detectors


def _model(name: str, workspace: Path, reports: Path) -> dict[str, object]:
    return {"name": name, "window": {"size": WINDOW}, "reference": {"first_n": WINDOW},
            "evaluation": {"interval": 3600, "every_events": WINDOW, "min_events": WINDOW,
                           "embedding_sample": 0, "evidently_workspace": str(workspace),
                           "report_dir": str(reports)},
            "detectors": {"accuracy": {"min_labels": 300},
                          "drift": {"texts": [{"column": "input_text"}]},
                          "latency": {"p95_ms": 250.0}}}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory,
              ) -> tuple[Path, dict[str, list[Evaluation]]]:
    """Model m drifts (new vocabulary) after three windows; n stays put."""
    root = tmp_path_factory.mktemp("evidently")
    workspace = root / "workspace"
    config = parse_config({"models": [_model(n, workspace, root / "reports") for n in MODELS]})
    seen: dict[str, list[Evaluation]] = {n: [] for n in MODELS}
    monitoring = build_monitoring(config, CollectorRegistry(),
                                  [lambda e: seen[e.model].append(e)])
    for partition, name in enumerate(MODELS):
        stream, offset = Stream(seed=10 + partition), 0
        events = stream.batch(3 * WINDOW) + (
            stream.batch(2 * WINDOW + 1, vocab="z") if name == "m" else [])
        for start in range(0, len(events), 500):
            chunk = [msgspec.structs.replace(e, model=name) for e in events[start:start + 500]]
            monitoring.windows.apply(PartitionBatch("t", partition, chunk, offset,
                                                    offset + len(chunk) - 1))
            offset += len(chunk)
            windows = monitoring.windows.get(name)
            if windows is not None and windows.new_events >= WINDOW:
                monitoring.evaluator.run_model(name)
    assert seen["m"] and seen["n"] and any(e.breached for e in seen["m"])
    return workspace, seen


def test_each_model_has_a_project_with_its_evaluations_and_breach_reports(
        evaluated: tuple[Path, dict[str, list[Evaluation]]]) -> None:
    from evidently.ui.workspace import Workspace

    path, seen = evaluated
    workspace = Workspace(str(path))  # a fresh handle: only what is on disk
    projects = {p.name: p for p in workspace.list_projects()}
    assert set(projects) == set(MODELS)
    for name, evaluations in seen.items():
        runs = [workspace.get_run(projects[name].id, run)
                for run in workspace.list_runs(projects[name].id)]
        assert all(run is not None for run in runs)
        passes = {run.metadata["evaluation_id"]: run for run in runs
                  if run is not None and "evaluation" in run.tags}
        assert set(passes) == {e.id for e in evaluations}
        for evaluation in evaluations:
            run = passes[evaluation.id]
            assert run.timestamp.timestamp() == pytest.approx(evaluation.ts, abs=1e-3)
            assert ("breach" in run.tags) == evaluation.breached
            # Each decided statistic is a metric value; its threshold is Evidently's test.
            values = {result.metric_value_location.metric.params["column"]: result.value
                      for result in run.metric_results.values()}
            failed = {test.metric_config.params["column"] for result in
                      run.metric_results.values() for test in result.tests
                      if test.status.value == "FAIL"}
            decided = {r.key: r.statistic for r in evaluation.results
                       if r.verdict.value != "insufficient_data"}
            assert values == pytest.approx(decided)
            assert failed == {r.key for r in evaluation.breaches}
        reports = [run for run in runs if run is not None and "breach-report" in run.tags]
        assert bool(reports) == any(e.breached for e in evaluations)
        for report in reports:
            assert report.metadata["evaluation_id"] in {e.id for e in evaluations if e.breached}
            assert any(result.metric_value_location.metric.params["type"].endswith("ValueDrift")
                       for result in report.metric_results.values())


@pytest.fixture
def evidently_ui(evaluated: tuple[Path, dict[str, list[Evaluation]]],
                 tmp_path: Path) -> Iterator[str]:
    path, _ = evaluated
    port = free_port()
    evidently = Path(sys.executable).parent / "evidently"
    with open(tmp_path / "ui.log", "wb") as log:
        process = subprocess.Popen(
            [str(evidently), "ui", "--workspace", str(path), "--host", "127.0.0.1",
             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "DO_NOT_TRACK": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "ui.log").read_text()[-2000:]
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/api/projects", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(15)


@pytest.mark.slow
@pytest.mark.integration
def test_evidently_ui_lists_the_projects_and_their_runs(
        evidently_ui: str, evaluated: tuple[Path, dict[str, list[Evaluation]]]) -> None:
    _, seen = evaluated
    projects = httpx.get(evidently_ui + "/api/projects", timeout=10).json()
    assert {p["name"] for p in projects} == set(MODELS)
    for project in projects:
        snapshots = httpx.get(f"{evidently_ui}/api/projects/{project['id']}/snapshots",
                              timeout=10).json()
        ids = {s["metadata"].get("evaluation_id") for s in snapshots}
        assert ids == {e.id for e in seen[project["name"]]}
