"""The API's JSON stays valid JSON when a detector reports a statistic that is not a number."""

from __future__ import annotations

import json
import math

from daemon.act.api import evaluation_json
from daemon.monitor.evaluation import Evaluation
from detectors.result import DetectorResult, Verdict


def test_non_finite_statistics_and_thresholds_become_null() -> None:
    results = (
        DetectorResult("accuracy", "accuracy_vs_reference", 0.91, math.nan, "below", Verdict.OK,
                       0, 300),
        DetectorResult("latency", "p95_ms", math.inf, 250.0, "above", Verdict.BREACH, 0, 300),
    )
    body = evaluation_json(Evaluation("m", "1", 1.0, results, 7), with_results=True)
    text = json.dumps(body, allow_nan=False)  # what the HTTP response does
    parsed = json.loads(text)
    assert parsed["results"][0]["threshold"] is None
    assert parsed["results"][0]["statistic"] == 0.91
    assert parsed["breaches"][0]["statistic"] is None
