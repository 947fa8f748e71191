"""Scale-out: N daemon instances on one broker and one PostgreSQL store, against one instance.

1. Ingest: the same topic (6 partitions, 6 models) read by one instance, then by N in one
   consumer group; X = the group's ingest rate over the single instance's (from each side's
   first counted event to the last; on 2 cores it will not reach N).
2. Takeover: an Alertmanager alert sent to every instance (as a resend would) starts one run;
   its owner is killed with SIGKILL in the middle of it while traffic goes on. T = seconds
   from the kill until a survivor holds the run's lease; then the survivor must finish the run
   (the last step stands in for the deploy) and count every event produced after the kill.
   L = events produced after the kill the survivors never counted; R = runs beyond one;
   D = deploy effects beyond one.

    .venv/bin/python bench/scale.py [--instances 2] [--events 60000]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/actions.py shadows actions

import argparse
import contextlib
import os
import random
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from daemon.ingest.broker import LocalBroker, ensure_topics, free_port
from harness.postgres import cluster
from harness.traffic import encoded, inference_record, make_producer, produce

TOPIC, PARTITIONS, MODELS, TOKEN = "scale", 6, 6, "bench-t0ken-0123456789"
ROOT = Path(__file__).resolve().parents[1]


def wait(check: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            value = check()
            if value:
                return value
        time.sleep(every_s)
    raise SystemExit(f"timed out after {timeout_s}s waiting for {what}")


class Instance:
    def __init__(self, tmp: Path, name: str, config: dict[str, Any]) -> None:
        self.name, self.port = name, free_port()
        path = tmp / f"{name}.yaml"
        api = {"token": TOKEN, "webhook_token": TOKEN, "port": self.port}
        path.write_text(yaml.safe_dump({**config, "api": api,
                                        "runner": {**config["runner"], "instance_id": name}}))
        self.log = open(tmp / f"{name}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", "run", "-c", str(path)],
                                     stdout=self.log, stderr=self.log, cwd=ROOT,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.url = f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        return httpx.get(self.url + "/readyz", timeout=2).status_code == 200

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(self.url + "/metrics", timeout=5).text
        return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.log.close()


def config(bootstrap: str, group: str, state: dict[str, Any], tmp: Path) -> dict[str, Any]:
    log = str(tmp / "steps.log")
    steps = [{"name": n, "uses": "harness.scale_steps:hold_once", "max_attempts": 1,
              "params": {"log": log, "hold_s": 60 if n == "train" else 0}}
             for n in ("snapshot", "train", "deploy")]
    return {"kafka": {"bootstrap_servers": [bootstrap], "topics": [TOPIC], "group_id": group,
                      "create_topics": False, "session_timeout_ms": 6000,
                      "heartbeat_interval_ms": 1000},
            "state": {**state, "artifacts_dir": str(tmp / "artifacts")},
            "models": [{"name": "model-0", "policy": {"pipeline": "retrain", "mode": "auto"}}],
            "pipelines": {"retrain": {"steps": steps}},
            "runner": {"poll_interval": 0.2, "lease_ttl": 5, "work_dir": str(tmp / "runs")}}


def ingest_rate(instances: list[Instance], total: int) -> float:
    start = 0.0
    while True:
        seen = sum(i.metric("lifeguard_events_total") for i in instances)
        if seen and not start:
            start = time.perf_counter()
        if seen >= total:
            return total / (time.perf_counter() - start)
        time.sleep(0.05)


def send(bootstrap: str, n: int, seed: int) -> None:
    rng = random.Random(seed)
    producer = make_producer(bootstrap)
    produce(producer, TOPIC, encoded(inference_record(rng, model=f"model-{i % MODELS}",
                                                      version="1") for i in range(n)))
    producer.close()


def alert() -> dict[str, Any]:
    labels = {"alertname": "AccuracyDrop", "model": "model-0"}
    return {"version": "4", "groupKey": "{}:{}", "status": "firing", "receiver": "lifeguard",
            "alerts": [{"status": "firing", "labels": labels, "annotations": {},
                        "startsAt": "2026-12-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                        "fingerprint": "bench"}]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--events", type=int, default=60_000)
    args = parser.parse_args()
    n, total = args.instances, args.events
    with LocalBroker() as broker, cluster() as pg, tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        ensure_topics(broker.bootstrap, {TOPIC: PARTITIONS, "lifeguard.dead-letter": 1})
        send(broker.bootstrap, total, seed=1)
        one = Instance(tmp, "single", config(broker.bootstrap, "scale-1",
                                             {"path": str(tmp / "single.db")}, tmp))
        try:
            wait(one.ready, 60, "the single instance")
            single = ingest_rate([one], total)
        finally:
            one.kill()
        print(f"1 instance: {single:,.0f} ev/s")
        url = pg.create_database()
        group = [Instance(tmp, f"i{k}", config(broker.bootstrap, "scale-n", {"url": url}, tmp))
                 for k in range(n)]
        try:
            wait(lambda: all(i.ready() for i in group), 60, "the group")
            scaled = ingest_rate(group, total)
            print(f"{n} instances: {scaled:,.0f} ev/s")
            wait(lambda: sum(i.metric("lifeguard_model_owned", model="model-0")
                             for i in group) == 1, 60, "one owner of model-0")
            created = [httpx.post(i.url + "/api/v1/alerts", json=alert(), timeout=30,
                                  headers={"Authorization": f"Bearer {TOKEN}"}).json()
                       for i in group]
            (run_id,) = [r for c in created for r in c["runs_created"]]
            log = tmp / "steps.log"
            wait(lambda: log.exists() and f"holding {run_id} train" in log.read_text(), 60,
                 "the run to be mid-step")
            def leases(via: Instance) -> list[str]:
                detail = httpx.get(f"{via.url}/api/v1/runs/{run_id}", timeout=5).json()
                return [e["actor"] for e in detail["audit"] if e["action"] == "run.leased"]

            owner = next(i for i in group if i.name == leases(group[0])[-1])
            survivors = [i for i in group if i is not owner]
            counted = sum(i.metric("lifeguard_events_total") for i in survivors)
            after = total // 4
            owner.kill()
            killed = time.monotonic()
            send(broker.bootstrap, after, seed=2)
            wait(lambda: leases(survivors[0])[-1] != owner.name, 120, "a survivor to take the run",
                 0.05)
            takeover = time.monotonic() - killed
            runs = survivors[0].url + "/api/v1/runs"
            wait(lambda: httpx.get(f"{runs}/{run_id}", timeout=5).json()["state"]
                 in ("succeeded", "failed"), 120, "the run to end")
            with contextlib.suppress(SystemExit):
                wait(lambda: sum(i.metric("lifeguard_events_total") for i in survivors)
                     >= counted + after, 60, "the survivors to count the new traffic")
            recounted = sum(i.metric("lifeguard_events_total") for i in survivors) - counted
            lost = max(0, after - int(recounted))
            state = httpx.get(f"{runs}/{run_id}", timeout=5).json()["state"]
            all_runs = httpx.get(runs, params={"model": "model-0"}, timeout=5).json()
            run_count = len(all_runs["runs"] if isinstance(all_runs, dict) else all_runs)
            deploys = log.read_text().count(f"effect {run_id} deploy")
        finally:
            for i in group:
                i.kill()
    print(f"run {run_id}: {state}, taken over from {owner.name} in {takeover:.1f}s")
    print(f"scale instances {n}, events_lost {lost}, duplicate_runs {run_count - 1}, "
          f"duplicate_deploys {deploys - 1}, takeover_s {takeover:.1f}, "
          f"ingest ratio {scaled / single:.2f}")


if __name__ == "__main__":
    main()
