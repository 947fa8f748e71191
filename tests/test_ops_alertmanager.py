"""ops/alertmanager/alertmanager.yml end to end: a real Alertmanager (Debian's
prometheus-alertmanager) routes a model alert to a real daemon's webhook with the bearer token,
and the daemon creates a run of the alert's pipeline; an ops alert reaches on-call only, and
the consequences of a down daemon are inhibited."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from procs import DaemonProcess, wait_until

from daemon.ingest.broker import LocalBroker, ensure_topics, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OPS = Path(__file__).resolve().parent.parent / "ops"
TOPIC = "ops-alerts"
TOKEN = "ops-test-token-0123456789"


class OnCall:
    """A stand-in paging system: records every webhook payload it is sent."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        received = self.payloads

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/alerts"

    def alertnames(self) -> set[str]:
        return {a["labels"]["alertname"] for p in self.payloads for a in p["alerts"]}


def _alertmanager_config(daemon_port: int, token_file: Path, oncall_url: str) -> dict[str, Any]:
    """The shipped config with only the addresses, the token file and the waits changed."""
    config = yaml.safe_load((OPS / "alertmanager" / "alertmanager.yml").read_text())
    config["route"].update(group_wait="1s", group_interval="2s")
    for route in config["route"]["routes"]:
        if "group_wait" in route:
            route.update(group_wait="1s", group_interval="2s")
    for receiver in config["receivers"]:
        (hook,) = receiver["webhook_configs"]
        if receiver["name"] == "lifeguard":
            path = hook["url"].split(":9464", 1)[1]
            hook["url"] = f"http://127.0.0.1:{daemon_port}{path}"
            hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
        else:
            hook["url"] = oncall_url
    return config


def _daemon_config(bootstrap: str, tmp: Path) -> dict[str, Any]:
    """The shipped ops config on the test broker, its model's policy in dry-run."""
    config = yaml.safe_load((OPS / "config" / "lifeguard.yaml").read_text())
    config["kafka"].update(bootstrap_servers=[bootstrap], topics=[TOPIC], group_id="ops-alerts",
                           dead_letter_topic=f"{TOPIC}.dlq", create_topics=True,
                           session_timeout_ms=6000, heartbeat_interval_ms=1000)
    config["api"].update(host="127.0.0.1", webhook_token=TOKEN)
    config["state"] = {"path": str(tmp / "state" / "lifeguard.db"),
                       "artifacts_dir": str(tmp / "state" / "artifacts")}
    config["models"][0]["policy"]["mode"] = "dry-run"  # record the run, execute nothing
    return config


@contextlib.contextmanager
def _alertmanager(tmp: Path, config: dict[str, Any]) -> Iterator[str]:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        pytest.skip("prometheus-alertmanager is not installed (run `make ops-tools`)")
    path = tmp / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp / "alertmanager.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([binary, f"--config.file={path}",
                                 f"--storage.path={tmp / 'am-data'}",
                                 f"--web.listen-address=127.0.0.1:{port}",
                                 "--cluster.listen-address=", "--log.level=warn"],
                                stdout=log, stderr=log)
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"alertmanager exited: {log_path.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(url + "/-/ready", timeout=2).status_code == 200
            return False

        wait_until(ready, 30, 0.2, "alertmanager ready")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _alert(**labels: str) -> dict[str, Any]:
    """An alert as Prometheus posts it, from the labels of a rule in alerts.rules.yml."""
    rules = yaml.safe_load((OPS / "prometheus" / "rules" / "alerts.rules.yml").read_text())
    (rule,) = [r for g in rules["groups"] for r in g["rules"]
               if r.get("alert") == labels["alertname"]]
    return {"labels": {**rule["labels"], **labels},
            "annotations": {"runbook_url": rule["annotations"]["runbook_url"]},
            "startsAt": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")}


def test_model_alerts_start_pipelines_ops_alerts_page_and_consequences_are_inhibited(
        broker: LocalBroker, tmp_path: Path) -> None:
    ensure_topics(broker.bootstrap, {TOPIC: 3, f"{TOPIC}.dlq": 1})
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    oncall = OnCall()
    oncall.thread.start()
    daemon = DaemonProcess(tmp_path, _daemon_config(broker.bootstrap, tmp_path))
    try:
        daemon.start()  # inside the try: a daemon that never gets ready is still killed
        with _alertmanager(tmp_path, _alertmanager_config(daemon.port, token_file,
                                                          oncall.url)) as am:
            model_alert = _alert(alertname="LifeguardDetectorBreached", model="sentiment",
                                 version="1", detector="drift", metric="score", column="text")
            ops_alert = _alert(alertname="LifeguardModelErrorRate", model="sentiment",
                               version="1")
            # A daemon down, and a consequence of it that must be inhibited.
            down = _alert(alertname="LifeguardDown", job="lifeguard", instance="lg-1:9464")
            gone = _alert(alertname="LifeguardModelGone", model="support-bot")
            posted = httpx.post(am + "/api/v2/alerts", json=[model_alert, ops_alert, down, gone],
                                timeout=5)
            assert posted.status_code == 200, posted.text

            def runs() -> list[dict[str, Any]]:
                return httpx.get(daemon.url + "/api/v1/runs", params={"model": "sentiment"},
                                 timeout=5).json()["runs"]

            (run,) = wait_until(runs, 30, 0.5, "a run created by the alert")
            paged = {"LifeguardDetectorBreached", "LifeguardModelErrorRate", "LifeguardDown"}
            wait_until(lambda: paged <= oncall.alertnames(), 30, 0.5, "the alerts at on-call")
            time.sleep(3)  # past group_interval: an uninhibited LifeguardModelGone is sent by now
            detail = httpx.get(f"{daemon.url}/api/v1/runs/{run['id']}", timeout=5).json()
            audit = httpx.get(daemon.url + "/api/v1/audit", params={"model": "sentiment"},
                              timeout=5).json()["entries"]
    finally:
        daemon.kill()
        oncall.server.shutdown()
    assert (run["pipeline"], run["source"], run["state"]) == ("retrain", "alert", "dry_run")
    assert detail["evidence"]["labels"]["alertname"] == "LifeguardDetectorBreached"
    # The ops alerts never reached the daemon: nothing was ignored or suppressed for them.
    assert not [e for e in audit if "LifeguardModelErrorRate" in json.dumps(e)]
    assert oncall.alertnames() == paged  # LifeguardModelGone inhibited by LifeguardDown
    # On-call got the model alert too (continue: true), with the pipeline label intact.
    pages = [a for p in oncall.payloads for a in p["alerts"]]
    assert {a["labels"].get("pipeline") for a in pages
            if a["labels"]["alertname"] == "LifeguardDetectorBreached"} == {"retrain"}
