"""Memory over a long run: does the daemon's RSS stay flat once its windows, reference and
label-join buffers are full? 1M inference events (plus feedback for three in four) over 4
models, with passes in the evaluation worker process after every 5,000 new events of a model.

The ingest path runs in-process straight into the daemon's sinks (decode, metrics, windows +
label join, the evaluator's nudge; see bench/inprocess.py): a broker-driven 1M-event run takes
too long on 2 cores, and the broker's own memory is not the daemon's. Event time advances
20 ms an event, so the label join's TTL (600 s here) expires entries from about 30k events on:
by 100k events every bound is reached. RSS is the daemon process's plus its worker's.
Last line: ``soak rss after 1M events / after 100k R``.

    .venv/bin/python bench/soak.py [--events 1000000]
"""

from __future__ import annotations

import sys
from pathlib import Path

# This directory holds bench/actions.py, which would shadow the `actions` package: the project
# root goes first on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import gc
import os
import time

from inprocess import InProcessDaemon, messages, rss_mb

from daemon.config import parse_config

MODELS = ["sentiment", "support", "search", "spam"]


def rss(daemon: InProcessDaemon) -> tuple[float, float]:
    daemon.drain()
    gc.collect()
    worker = daemon.evaluator.lanes[0].backend.pid  # type: ignore[attr-defined]
    return rss_mb(os.getpid()), (rss_mb(worker) if worker else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    config = parse_config({
        "state": {"path": "var/bench-soak/state.db"},
        "models": [{"name": name, "window": {"size": 5000}, "reference": {"first_n": 2000},
                    "labels": {"ttl": 600, "early_ttl": 120},
                    "evaluation": {"interval": 3600, "every_events": 5000, "min_events": 2000,
                                   "embedding_sample": 0}} for name in MODELS]})
    daemon = InProcessDaemon(config)
    daemon.start()
    started = time.perf_counter()
    try:
        values = messages(MODELS, args.events)
        marks: dict[int, tuple[float, float]] = {}
        fed = 0
        for mark in sorted({100_000, *range(250_000, args.events + 1, 250_000), args.events}):
            daemon.feed(values, mark - fed)
            fed = mark
            marks[mark] = rss(daemon)
            passes = sum(s.value for m in daemon.evaluator.passes.collect() for s in m.samples
                         if s.name.endswith("_total"))
            print(f"  {mark:>9,} events: rss daemon {marks[mark][0]:.0f} MB, worker "
                  f"{marks[mark][1]:.0f} MB, {passes:.0f} passes, "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
    finally:
        daemon.stop()
    first, last = sum(marks[100_000]), sum(marks[args.events])
    print(f"  load average: {os.getloadavg()[0]:.1f} on {len(os.sched_getaffinity(0))} cores; "
          f"daemon alone {marks[args.events][0] / marks[100_000][0]:.3f}, "
          f"worker alone {marks[args.events][1] / max(marks[100_000][1], 1):.3f}")
    print(f"soak rss after {args.events / 1e6:g}M events / after 100k {last / first:.3f}")


if __name__ == "__main__":
    main()
