"""The assembly honours every per-model setting per model, and the config speaks one task
vocabulary."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from daemon.assembly import build_monitoring
from daemon.config import ConfigError, parse_config
from daemon.monitor.detector_pass import build_engine


def _model(name: str, **extra: object) -> dict[str, object]:
    return {"name": name, "evaluation": {"embedding_sample": 0}, **extra}


def test_report_dir_and_embedding_model_are_per_model(tmp_path: Path) -> None:
    config = parse_config({
        "state": {"path": str(tmp_path / "state.db")},
        "models": [
            _model("a", evaluation={"report_dir": str(tmp_path / "reports-a")},
                   embedding_model=str(tmp_path / "encoder-a")),
            _model("b", embedding_model=str(tmp_path / "encoder-b")),
            _model("c", embedding_model=str(tmp_path / "encoder-a")),
        ]})
    monitoring = build_monitoring(config, CollectorRegistry(), [])
    specs = monitoring.evaluator.specs
    assert specs["a"].report_dir == tmp_path / "reports-a"
    assert specs["b"].report_dir == tmp_path / "reports"  # beside the state file
    # Where passes run: one encoder cache per encoder directory, a and c share one.
    models = build_engine(specs.values()).models
    assert models["a"].embeddings is models["c"].embeddings
    assert models["a"].embeddings is not models["b"].embeddings


def test_the_detectors_judge_the_models_own_task() -> None:
    config = parse_config({"models": [{"name": "chat", "task": "causal-lm"}]})
    monitoring = build_monitoring(config, CollectorRegistry(), [])
    spec = monitoring.evaluator.specs["chat"]
    assert spec.suite.task == "causal-lm"
    assert build_engine([spec]).models["chat"].suite.config.task == "causal-lm"
    with pytest.raises(ConfigError, match=r"detectors\.task"):
        parse_config({"models": [{"name": "chat", "task": "causal-lm",
                                  "detectors": {"task": "sequence-classification"}}]})
