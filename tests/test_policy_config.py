"""Policy config: the annotated example loads, misspelled keys fail `lifeguard check-config`
naming their path, and the shipped JSON Schema is the one the models generate today."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from daemon.act.config import Mode, PipelineConfig
from daemon.cli.schema import config_schema, render_schema
from daemon.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "lifeguard.yaml"
SCHEMA = ROOT / "examples" / "lifeguard.schema.json"


def test_example_config_loads_with_policies_and_pipelines() -> None:
    config = load_config(EXAMPLE)
    settings = config.policy_settings()
    sentiment = settings.models["sentiment"]
    assert sentiment.hold == 3 and sentiment.cooldown == 6 * 3600 and sentiment.mode is Mode.APPROVE
    assert sentiment.trigger is not None and sentiment.trigger.any is not None
    assert settings.models["support-bot"].mode is Mode.DRY_RUN
    retrain = settings.pipelines["retrain"]
    assert [s.name for s in retrain.steps] == ["fine_tune", "evaluate", "export_onnx",
                                               "quantize", "deploy"]
    assert retrain.steps[0].timeout == 7200 and retrain.backoff == 10


@pytest.mark.parametrize(("old", "new", "path"), [
    ("      cooldown: 6h", "      cooldwn: 6h", "models.0.policy.cooldwn: unknown key"),
    ("                min_matches: 2", "                min_match: 2",
     "models.0.policy.trigger.any.1.all.0.min_match: unknown key"),
    ("        timeout: 30m", "        timout: 30m",
     "pipelines.retrain.steps.4.timout: unknown key"),
    ("  max_concurrent_runs: 1", "  max_concurrent: 1", "runner.max_concurrent: unknown key"),
])
def test_misspelled_key_fails_check_config_naming_its_path(tmp_path: Path, old: str, new: str,
                                                           path: str) -> None:
    text = EXAMPLE.read_text()
    assert old in text
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace(old, new, 1))
    done = subprocess.run([sys.executable, "-m", "daemon.cli", "check-config", str(bad)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 2
    assert path in done.stderr


def test_example_passes_check_config() -> None:
    done = subprocess.run([sys.executable, "-m", "daemon.cli", "check-config", str(EXAMPLE)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "ok (2 model(s)" in done.stdout


def test_unknown_pipeline_and_bad_values_are_named() -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["models"][0]["policy"]["pipeline"] = "retrian"
    with pytest.raises(ConfigError, match=r"models\.0\.policy\.pipeline: unknown pipeline "
                                          r"'retrian' \(requantize, retrain\)"):
        parse_config(data)
    data = yaml.safe_load(EXAMPLE.read_text())
    data["models"][0]["policy"]["mode"] = "yolo"
    with pytest.raises(ConfigError, match=r"models\.0\.policy\.mode"):
        parse_config(data)
    data = yaml.safe_load(EXAMPLE.read_text())
    data["models"][0]["policy"]["trigger"] = {"key": "a.*", "all": [{"key": "b"}]}
    with pytest.raises(ConfigError, match=r"models\.0\.policy\.trigger: .*exactly one of"):
        parse_config(data)


def test_durations_and_step_shorthand() -> None:
    p = PipelineConfig.model_validate({"steps": ["a", {"name": "b", "timeout": "1.5m"}],
                                       "backoff": 2, "max_backoff": "1h"})
    assert [s.name for s in p.steps] == ["a", "b"]
    assert (p.steps[1].timeout, p.backoff, p.max_backoff) == (90.0, 2.0, 3600.0)
    with pytest.raises(ValueError, match="not a duration"):
        PipelineConfig.model_validate({"steps": ["a"], "backoff": "soon"})


def test_shipped_json_schema_is_up_to_date() -> None:
    assert SCHEMA.read_text() == render_schema(), (
        "regenerate: lifeguard schema --out examples/lifeguard.schema.json")
    schema = json.loads(SCHEMA.read_text())
    assert {"models", "pipelines", "runner", "alerts"} <= set(schema["properties"])
    policy = schema["$defs"]["ModelPolicy"]
    assert policy["additionalProperties"] is False
    assert set(yaml.safe_load(EXAMPLE.read_text())) <= set(config_schema()["properties"])
