"""Per-model monitoring settings: windows, the reference, the label join and evaluation cadence.

Every cap here is what bounds memory: traffic never does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from lifeguard.config import Duration, StrictModel


class WindowConfig(StrictModel):
    """The current window of each model version: the newest ``size`` events, no older than
    ``max_age`` (seconds of event time; 0 = no age limit)."""

    size: int = Field(5000, ge=10, le=1_000_000)
    max_age: Duration = 0.0
    features: list[str] = Field(
        default_factory=list,
        description="Flat input features to keep (numeric or categorical), besides the text.",
    )


class ReferenceConfig(StrictModel):
    """What 'normal' looks like: a file of the training distribution (every version is judged
    against it), or else the first ``first_n`` events each version serves, then frozen, so a
    retrained version's own traffic becomes the new normal."""

    path: Path | None = Field(
        None, description="JSONL or Parquet rows with the window's columns (input_text, ...)."
    )
    first_n: int = Field(2000, ge=10, le=1_000_000)


class LabelJoinConfig(StrictModel):
    """Feedback joined to inferences by request_id, in event time."""

    ttl: Duration = Field(3600.0, gt=0, description="How long an inference waits for a label.")
    early_ttl: Duration = Field(600.0, gt=0, description="How long early feedback waits.")
    max_pending: int = Field(100_000, ge=100, description="Inferences awaiting a label (cap).")
    max_early: int = Field(20_000, ge=10, description="Feedback awaiting its inference (cap).")


class EvaluationConfig(StrictModel):
    interval: Duration = Field(30.0, ge=0, description="Seconds between passes (0 = off).")
    every_events: int = Field(0, ge=0, description="Also evaluate after this many new events.")
    min_events: int = Field(200, ge=1, description="Current-window events needed to evaluate.")
    embedding_sample: int = Field(
        500, ge=0, description="Rows per window embedded for embedding drift (0 = off).")
    report_dir: Path | None = Field(
        None, description="Where breach reports (HTML) go; default: <state dir>/reports.")
    evidently_workspace: Path | None = Field(
        None, description="A local Evidently workspace: each evaluation (and breach report) "
                          "becomes a run of the model's project; `evidently ui --workspace "
                          "PATH` shows them.")

    @model_validator(mode="after")
    def _some_cadence(self) -> EvaluationConfig:
        if self.interval == 0 and self.every_events == 0:
            raise ValueError("set interval and/or every_events, or evaluation never runs")
        return self


class EvaluatorConfig(StrictModel):
    """Where detector passes run (for every model), and what happens to one that fails."""

    isolation: Literal["process", "thread"] = Field(
        "process", description="process: passes run in evaluation worker processes, outside "
        "the ingest process's interpreter lock (Evidently and the sentence encoder load "
        "there only); thread: in the daemon process (tests, debugging).")
    workers: int = Field(
        1, ge=1, le=64, description="Evaluation lanes (a worker process each); a model is "
        "pinned to one, and models of a lane take turns, least recently evaluated first.")
    pass_timeout: Duration = Field(
        300.0, gt=0, description="A pass still running after this is killed (its worker "
        "too) and retried.")
    start_timeout: Duration = Field(
        120.0, gt=0, description="How long a new worker may take to import and warm up.")
    nice: int = Field(
        10, ge=0, le=19, description="Niceness of worker processes: when cores are short, "
        "ingest goes first and passes wait (lifeguard_evaluation_lag_seconds shows it).")
    retries: int = Field(2, ge=0, le=10,
                         description="Immediate retries of a pass whose worker crashed or "
                         "hung (on a fresh worker).")
