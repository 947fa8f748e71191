"""Cost as the number of models grows: the same 200k-event stream (the same total event rate)
split over 1, 10 and 50 models, through the daemon's ingest path in-process (decode, metrics,
windows + label join, the evaluator's nudge; see bench/inprocess.py) with passes in the
evaluation worker process after every 1,000 new events of a model. Each size runs in its own
interpreter, so its RSS is its own.

Per size: ingest rate (events over the seconds spent decoding and applying them, while the
worker evaluates beside it), the mean CPU time of one model version's detector pass in the
worker (CPU, not wall: on a shared machine wall time mostly measures waiting for a core), and
the RSS of the daemon process plus its worker once the evaluator has caught up. Last line:
``models 1/10/50: ingest ev/s A/B/C, pass ms per model D/E/F, rss MB G/H/I``.

    .venv/bin/python bench/scale_models.py [--events 200000]
"""

from __future__ import annotations

import sys
from pathlib import Path

# This directory holds bench/actions.py, which would shadow the `actions` package: the project
# root goes first on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import os
import subprocess

from daemon.config import parse_config

SIZES = (1, 10, 50)


def config(models: int) -> object:
    return parse_config({
        "state": {"path": "var/bench-scale/state.db"},
        "models": [{"name": f"m{i:02d}", "window": {"size": 2000},
                    "reference": {"first_n": 1000},
                    "evaluation": {"interval": 3600, "every_events": 1000, "min_events": 1000,
                                   "embedding_sample": 0}} for i in range(models)]})


def child(models: int, events: int) -> dict[str, float]:
    from inprocess import InProcessDaemon, messages, rss_mb

    daemon = InProcessDaemon(config(models))  # type: ignore[arg-type]
    daemon.start()
    try:
        names = [f"m{i:02d}" for i in range(models)]
        spent = daemon.feed(messages(names, events), events)
        daemon.drain()
        registry = daemon.registry

        def total(metric: str) -> float:
            return sum(registry.get_sample_value(metric, {"model": n}) or 0.0 for n in names)

        count = total("lifeguard_evaluation_duration_seconds_count")
        wall = total("lifeguard_evaluation_duration_seconds_sum")
        cpu = total("lifeguard_evaluation_cpu_seconds_total")
        worker = daemon.evaluator.lanes[0].backend.pid  # type: ignore[attr-defined]
        rss = rss_mb(os.getpid()) + (rss_mb(worker) if worker else 0.0)
        return {"rate": events / spent, "pass_ms": 1000 * cpu / max(count, 1),
                "wall_ms": 1000 * wall / max(count, 1),
                "passes": count, "rss": rss, "daemon_rss": rss_mb(os.getpid())}
    finally:
        daemon.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.events)))
        return
    out = {}
    for models in SIZES:
        done = subprocess.run([sys.executable, __file__, "--child", str(models), "--events",
                               str(args.events)], capture_output=True, text=True, check=True)
        out[models] = json.loads(done.stdout.strip().splitlines()[-1])
        r = out[models]
        print(f"  {models:>2} models: {r['rate']:,.0f} ev/s, {r['passes']:.0f} passes of "
              f"{r['pass_ms']:.1f} ms CPU ({r['wall_ms']:.1f} ms wall), rss {r['rss']:.0f} MB "
              f"(daemon {r['daemon_rss']:.0f})", flush=True)
    print(f"  load average: {os.getloadavg()[0]:.1f} on {len(os.sched_getaffinity(0))} cores; "
          f"ingest at 50 / at 1: {out[50]['rate'] / out[1]['rate']:.2f} (target >= 0.8), "
          f"pass at 50 / at 1: {out[50]['pass_ms'] / out[1]['pass_ms']:.2f} (target <= 1.5)")
    a, b, c = (out[n]["rate"] for n in SIZES)
    d, e, f = (out[n]["pass_ms"] for n in SIZES)
    g, h, i = (out[n]["rss"] for n in SIZES)
    print(f"models 1/10/50: ingest ev/s {a:,.0f}/{b:,.0f}/{c:,.0f}, "
          f"pass ms per model {d:.1f}/{e:.1f}/{f:.1f}, rss MB {g:.0f}/{h:.0f}/{i:.0f}")


if __name__ == "__main__":
    main()
