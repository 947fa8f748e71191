"""ops/ Prometheus rules and Alertmanager config: checked and unit-tested by promtool and amtool
(Debian's prometheus and prometheus-alertmanager; `make ops-tools` installs them), plus the
contracts between them and the daemon (labels, pipelines, webhook path, runbooks)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.act.api import PREFIX, create_router
from daemon.config import load_config

OPS = Path(__file__).resolve().parent.parent / "ops"
RULES = sorted((OPS / "prometheus" / "rules").glob("*.yml"))
RULE_TESTS = sorted((OPS / "prometheus" / "tests").glob("*.test.yml"))
ALERTMANAGER = OPS / "alertmanager" / "alertmanager.yml"
MODEL_ALERT = {"alertname": "LifeguardDetectorBreached", "model": "sentiment",
               "pipeline": "retrain", "severity": "warning"}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (run `make ops-tools`)")
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=OPS)


def _alerts() -> list[dict[str, Any]]:
    return [rule for path in RULES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if "alert" in rule]


def test_promtool_checks_every_rule_file() -> None:
    assert len(RULES) == 2
    done = _run(_tool("promtool"), "check", "rules", *map(str, RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(RULES)


def test_promtool_unit_tests_pass() -> None:
    assert RULE_TESTS
    done = _run(_tool("promtool"), "test", "rules", *map(str, RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """The same tests with one expected label changed must fail: they really compare."""
    source = RULE_TESTS[0]
    broken = tmp_path / source.name
    text = source.read_text().replace("{severity: critical, pipeline: requantize",
                                      "{severity: warning, pipeline: requantize")
    assert text != source.read_text()
    broken.write_text(text.replace("../rules/", f"{OPS}/prometheus/rules/"))
    done = _run(_tool("promtool"), "test", "rules", str(broken))
    assert done.returncode != 0
    assert "LifeguardLatencySLOFastBurn" in done.stdout + done.stderr


def test_promtool_checks_the_scrape_config() -> None:
    done = _run(_tool("promtool"), "check", "config", str(OPS / "prometheus" / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load((OPS / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert "lifeguard" in jobs  # LifeguardDown and LifeguardAbsent select job="lifeguard"
    assert sorted(OPS / "prometheus" / f for f in config["rule_files"]) == RULES


def test_every_alert_has_severity_summary_and_a_runbook_section() -> None:
    readme = (OPS / "README.md").read_text()
    anchors = {_anchor(h) for h in re.findall(r"^#+ (.+)$", readme, re.MULTILINE)}
    alerts = _alerts()
    assert len(alerts) >= 10
    for rule in alerts:
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page == "ops/README.md" and anchor in anchors, (rule["alert"], anchor)


def _anchor(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_model_alerts_name_a_configured_pipeline_and_every_alert_is_unit_tested() -> None:
    """A model alert's pipeline must exist in the shipped config (else the daemon ignores it),
    and each alert has a promtool case where it fires with the labels the webhook reads."""
    pipelines = set(load_config(OPS / "config" / "lifeguard.yaml").pipelines)
    model_alerts = {r["alert"] for r in _alerts() if "pipeline" in r["labels"]}
    assert {"LifeguardDetectorBreached", "LifeguardLatencySLOFastBurn"} <= model_alerts
    for rule in _alerts():
        if "pipeline" in rule["labels"]:
            assert rule["labels"]["pipeline"] in pipelines, rule["alert"]
    fired: dict[str, list[dict[str, str]]] = {}
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                for alert in check.get("exp_alerts") or []:
                    fired.setdefault(check["alertname"], []).append(alert["exp_labels"])
    assert set(fired) == {r["alert"] for r in _alerts()}, "an alert without a firing test"
    for name in model_alerts:
        for labels in fired[name]:
            assert labels.get("model") and labels.get("pipeline"), (name, labels)


def test_amtool_checks_the_alertmanager_config() -> None:
    done = _run(_tool("amtool"), "check-config", str(ALERTMANAGER))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@pytest.mark.parametrize(("labels", "receivers"), [
    (MODEL_ALERT, "lifeguard,oncall"),
    ({"alertname": "LifeguardLatencySLOFastBurn", "model": "sentiment",
      "pipeline": "requantize", "severity": "critical"}, "lifeguard,oncall"),
    ({"alertname": "LifeguardModelSilent", "model": "sentiment", "severity": "warning"},
     "oncall"),
    ({"alertname": "LifeguardDown", "instance": "lg-0:9464", "severity": "critical"}, "oncall"),
])
def test_alertmanager_routes_model_alerts_to_the_daemon(labels: dict[str, str],
                                                        receivers: str) -> None:
    done = _run(_tool("amtool"), "config", "routes", "test", f"--config.file={ALERTMANAGER}",
                f"--verify.receivers={receivers}", *(f"{k}={v}" for k, v in labels.items()))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == receivers


def test_the_webhook_receiver_posts_to_the_daemons_alert_endpoint_with_a_bearer_token() -> None:
    config = yaml.safe_load(ALERTMANAGER.read_text())
    (receiver,) = [r for r in config["receivers"] if r["name"] == "lifeguard"]
    (hook,) = receiver["webhook_configs"]
    router: Any = create_router(None, None, None)  # type: ignore[arg-type]  # routes only
    routes = {(method, route.path) for route in router.routes for method in route.methods}
    url = re.match(r"^http://([^/:]+):(\d+)(/.*)$", hook["url"])
    assert url is not None
    assert ("POST", url.group(3)) in routes and url.group(3) == f"{PREFIX}/alerts"
    # The host is the Service in ops/kubernetes, on the port the daemon's config listens on.
    service = yaml.safe_load((OPS / "kubernetes" / "service.yaml").read_text())
    meta = service["metadata"]
    assert url.group(1) == f"{meta['name']}.{meta['namespace']}.svc.cluster.local"
    assert int(url.group(2)) == load_config(OPS / "config" / "lifeguard.yaml").api.port
    assert hook["http_config"]["authorization"]["type"] == "Bearer"
    assert hook["http_config"]["authorization"]["credentials_file"]
