"""How the state store's rows read and write: JSON columns, detector results, evaluations
and runs from their table rows (the same on SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.engine import RowMapping

from daemon.act.runs import ActionRun, RunState
from daemon.monitor.evaluation import Evaluation
from detectors.result import DetectorResult, Verdict


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def opt_str(value: object | None) -> str | None:
    return None if value is None else str(value)


def result_to_json(r: DetectorResult) -> dict[str, Any]:
    return {"detector": r.detector, "metric": r.metric, "statistic": r.statistic,
            "threshold": r.threshold, "direction": r.direction, "verdict": r.verdict.value,
            "n_reference": r.n_reference, "n_current": r.n_current, "method": r.method,
            "column": r.column, "segment": r.segment, "key": r.key}


def result_from_json(raw: dict[str, Any]) -> DetectorResult:
    fields = {k: v for k, v in raw.items() if k != "key"}
    return DetectorResult(**{**fields, "verdict": Verdict(fields["verdict"])})


def evaluation_from_row(row: RowMapping) -> Evaluation:
    results = tuple(result_from_json(r) for r in json.loads(row["results"]))
    return Evaluation(model=row["model"], model_version=row["model_version"], ts=row["ts"],
                      results=results, window_end_offset=row["window_end_offset"], id=row["id"])


def run_from_row(row: RowMapping) -> ActionRun:
    return ActionRun(
        id=row["id"], model=row["model"], pipeline=row["pipeline"], source=row["source"],
        mode=row["mode"], state=RunState(row["state"]), next_step=row["next_step"],
        steps=tuple(json.loads(row["steps"])), evidence=json.loads(row["evidence"]),
        snapshot_path=row["snapshot_path"], champion_path=row["champion_path"],
        error=row["error"], created_at=row["created_at"], updated_at=row["updated_at"],
    )
