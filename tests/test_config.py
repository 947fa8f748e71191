"""Config loading: defaults, and bad files failing with the path of the bad key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from daemon.config import ConfigError, load_config, parse_config
from daemon.ingest.config import EMBEDDED


def test_empty_config_runs_on_embedded_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("")
    config = load_config(path)
    assert config.kafka.bootstrap_servers == EMBEDDED
    assert config.kafka.topics == ["inference"]
    assert config.models == []


def test_unknown_nested_key_is_named_by_its_path() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"kafka": {"topics": ["a"], "max_batchh": 3}})
    assert "kafka.max_batchh: unknown key" in str(err.value)


def test_every_bad_key_is_reported() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"api": {"port": 70000}, "models": [{"name": "ok"}, {"name": "../etc"}]})
    message = str(err.value)
    assert "2 invalid setting(s)" in message
    assert "api.port" in message and "models.1.name" in message


def test_duplicate_model_names_are_rejected() -> None:
    with pytest.raises(ConfigError, match="repeated: a"):
        parse_config({"models": [{"name": "a"}, {"name": "a"}]})


LONG = "s3cret-0123456789abcdef"


def test_token_comes_from_the_environment_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LG_TEST_TOKEN", LONG)
    config = parse_config({"api": {"token_env": "LG_TEST_TOKEN"}})
    assert config.api.resolved_token() == LONG
    assert LONG not in repr(parse_config({"api": {"token": LONG}}))
    monkeypatch.setenv("LG_TEST_TOKEN", "")  # an empty Secret: unset, mutations refused
    assert config.api.resolved_token() is None
    monkeypatch.setenv("LG_TEST_TOKEN", "short")
    with pytest.raises(ConfigError, match="LG_TEST_TOKEN: a token must be at least 16"):
        config.api.resolved_token()


@pytest.mark.parametrize("key", ["token", "webhook_token"])
@pytest.mark.parametrize("value", ["", "   ", "fifteen-chars-x"])
def test_an_empty_or_short_token_is_a_config_error(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"api\.{key}: .*at least 16 characters"):
        parse_config({"api": {key: value}})
    assert parse_config({"api": {key: "x" * 16}}).api.model_dump()[key] is not None


def test_check_config_refuses_an_empty_token(tmp_path: Path) -> None:
    path = tmp_path / "lifeguard.yaml"
    path.write_text('api:\n  token: ""\n')
    result = subprocess.run([sys.executable, "-m", "daemon.cli", "check-config", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "api.token" in result.stderr and "at least 16 characters" in result.stderr


@pytest.mark.parametrize(("text", "needle"), [
    ("kafka: [1, 2", "not valid YAML"),
    ("- just\n- a list\n", "top level must be a mapping"),
])
def test_malformed_files_fail_clearly(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_config(path)


def test_check_config_command_names_the_misspelled_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("kafka:\n  group_idd: x\n")
    result = subprocess.run([sys.executable, "-m", "daemon.cli", "check-config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "kafka.group_idd: unknown key" in result.stderr
    path.write_text("kafka:\n  group_id: x\n")
    result = subprocess.run([sys.executable, "-m", "daemon.cli", "check-config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_unknown_step_params_fail_at_load_not_in_a_run() -> None:
    pipeline = {"steps": [{"name": "fine_tune", "params": {"epochs": 1}},
                          {"name": "evaluate", "params": {"min_improvement": 0.1}}]}
    with pytest.raises(ConfigError, match=r"pipelines.retrain.steps.1.params: unknown param "
                                          r"'min_improvement'"):
        parse_config({"pipelines": {"retrain": pipeline}})
    with pytest.raises(ConfigError, match="gate_floor"):
        parse_config({"pipelines": {"retrain": {"steps": [
            {"name": "evaluate", "params": {"gate_floor": 2.0}}]}}})
    with pytest.raises(ConfigError, match=r"fleet\.rollout"):
        parse_config({"pipelines": {"retrain": {"steps": [
            {"name": "deploy", "params": {"strategy": "canary"}}]}}})
    custom = {"steps": [{"name": "mine", "uses": "pkg.mod:fn", "params": {"anything": 1}}]}
    assert parse_config({"pipelines": {"custom": custom}}).pipelines["custom"]


def test_the_shipped_example_config_is_valid() -> None:
    from pathlib import Path as _Path

    example = _Path(__file__).resolve().parents[1] / "examples" / "lifeguard.yaml"
    config = load_config(example)
    assert config.pipelines and config.fleet is not None


def test_replay_defaults_to_every_models_window_plus_reference() -> None:
    config = parse_config({"models": [
        {"name": "a", "window": {"size": 1000}, "reference": {"first_n": 500}},
        {"name": "b", "window": {"size": 300}, "reference": {"path": "ref.jsonl"}}]})
    assert config.kafka.replay_messages is None
    assert config.replay_depth() == 1000 + 500 + 300  # b's reference is a file: not replayed
    assert parse_config({}).replay_depth() == 5000 + 2000  # the defaults of an unnamed model
    off = parse_config({"kafka": {"replay_messages": 0}, "models": [{"name": "a"}]})
    assert off.replay_depth() == 0


def test_state_url_names_a_supported_database() -> None:
    url = "postgresql://lifeguard@db:5432/lifeguard"
    assert parse_config({"state": {"url": url}}).state.location == url
    assert parse_config({}).state.location == str(Path("var/lifeguard.db"))
    with pytest.raises(ConfigError, match=r"state\.url"):
        parse_config({"state": {"url": "mysql://db/lifeguard"}})


def test_start_up_says_loudly_that_mutations_are_refused_without_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    from daemon.app import Daemon

    monkeypatch.delenv("LIFEGUARD_TOKEN", raising=False)
    monkeypatch.delenv("LIFEGUARD_WEBHOOK_TOKEN", raising=False)
    state = {"path": str(tmp_path / "s.db"), "artifacts_dir": str(tmp_path / "a")}
    with caplog.at_level("WARNING", logger="daemon.app"):
        Daemon(parse_config({"state": state})).store.close()
    text = caplog.text
    assert "approve, reject, pause and resume are REFUSED" in text
    assert "Alertmanager webhooks are REFUSED" in text
    caplog.clear()
    with caplog.at_level("WARNING", logger="daemon.app"):
        Daemon(parse_config({"state": state, "api": {"token": LONG, "webhook_token": LONG[::-1]}})
               ).store.close()
    assert "REFUSED" not in caplog.text
