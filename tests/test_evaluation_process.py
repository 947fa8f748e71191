"""Passes in the evaluation worker process: the same evaluations as in a thread, a worker that
dies or hangs killed, counted and retried while ingest goes on, and a daemon process that never
imports Evidently, torch or the sentence encoder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from test_evaluator import Harness, Stream

ROOT = Path(__file__).resolve().parents[1]
SIZE = 600  # small windows: these tests are about where passes run, not statistics
SMALL = {"window": {"size": SIZE}, "reference": {"first_n": SIZE},
         "evaluation": {"interval": 3600, "min_events": SIZE, "embedding_sample": 0}}


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def _detector_lines(registry: CollectorRegistry) -> list[str]:
    return sorted(line for line in generate_latest(registry).decode().splitlines()
                  if line.startswith(("lifeguard_detector_", "lifeguard_last_evaluation")))


@pytest.mark.integration
def test_process_and_thread_passes_give_the_same_evaluations() -> None:
    """A fixed stream, two passes (the second fed incrementally: new rows, late labels, a
    shifted vocabulary): the same evaluations, results and gauges either way."""
    outcomes = {}
    for isolation in ("thread", "process"):
        with Harness({"isolation": isolation}, **SMALL) as harness:
            stream = Stream(seed=11)
            harness.apply(stream.batch(2 * SIZE))
            first = harness.monitoring.evaluator.run_model("m")
            harness.apply(stream.batch(SIZE // 2, vocab="z", accuracy=0.6))
            second = harness.monitoring.evaluator.run_model("m")
            outcomes[isolation] = (first + second, _detector_lines(harness.registry))
    (in_thread, thread_gauges), (in_process, process_gauges) = outcomes.values()
    assert len(in_thread) == 2 and [e.id for e in in_thread] == [e.id for e in in_process]
    assert [e.results for e in in_thread] == [e.results for e in in_process]
    assert in_thread[1].breached  # the shift was seen, so the comparison covers a breach
    assert thread_gauges and thread_gauges == process_gauges


@pytest.mark.slow
@pytest.mark.integration
def test_a_killed_or_hung_worker_is_counted_and_retried_while_ingest_goes_on() -> None:
    settings = {"isolation": "process", "pass_timeout": 6, "retries": 1, "nice": 0}
    with Harness(settings, **SMALL) as harness:
        evaluator = harness.monitoring.evaluator
        worker = evaluator.lanes[0].backend
        stream = Stream(seed=12)
        harness.apply(stream.batch(2 * SIZE))
        assert evaluator.run_model("m")
        first_pid = worker.pid  # type: ignore[attr-defined]
        assert first_pid is not None

        os.kill(first_pid, signal.SIGKILL)  # dies between passes
        harness.apply(stream.batch(500))
        after_crash = evaluator.run_model("m")
        assert len(after_crash) == 1  # retried on a fresh worker, fed the whole window
        assert _sample(harness.registry, "lifeguard_evaluation_failures_total", model="m",
                       reason="crash") == 1
        second_pid = worker.pid  # type: ignore[attr-defined]
        assert second_pid not in (None, first_pid)

        os.kill(second_pid, signal.SIGSTOP)  # hangs: the pass must be killed, not awaited
        results: list = []
        hung = threading.Thread(target=lambda: results.extend(evaluator.run_model("m")))
        hung.start()
        windows = harness.monitoring.windows.get("m")
        assert windows is not None
        before = windows.current["1"].appended
        harness.apply(stream.batch(1000))  # ingest goes on while the pass hangs
        assert hung.is_alive() and windows.current["1"].appended >= before + 1000
        hung.join(timeout=120)
        assert not hung.is_alive() and len(results) == 1
        assert _sample(harness.registry, "lifeguard_evaluation_failures_total", model="m",
                       reason="timeout") == 1
        assert worker.pid not in (None, first_pid, second_pid)  # type: ignore[attr-defined]
        assert results[0].window_end_offset == harness.offset - 1  # it saw the new events
        # The replacement was started from a thread that has ended: it lives on regardless.
        harness.apply(stream.batch(100))
        assert len(evaluator.run_model("m")) == 1
        assert _sample(harness.registry, "lifeguard_evaluation_failures_total", model="m",
                       reason="crash") == 1


@pytest.mark.slow
@pytest.mark.integration
def test_the_daemon_process_never_imports_evidently_torch_or_the_encoder(tmp_path: Path) -> None:
    """A pass with embedding drift: the encoder loads in the worker, the daemon's own
    modules stay free of it (checked in a fresh interpreter: pytest's may have them)."""
    script = textwrap.dedent(f"""
        import sys
        from daemon.app import Daemon
        from daemon.config import parse_config
        from test_evaluator import Stream
        from daemon.ingest.batch import PartitionBatch

        config = parse_config({{
            "state": {{"path": {str(tmp_path / "state.db")!r}}},
            "models": [{{"name": "m", "window": {{"size": 400}}, "reference": {{"first_n": 400}},
                        "evaluation": {{"interval": 3600, "min_events": 400,
                                       "embedding_sample": 300}},
                        "detectors": {{"drift": {{"texts": [{{"column": "input_text",
                                                          "embedding": {{}}}}]}}}}}}]}})
        daemon = Daemon(config)
        try:
            daemon.monitoring.windows.apply(PartitionBatch("t", 0, Stream(1).batch(800), 0, 799))
            evaluations = daemon.monitoring.evaluator.run_model("m")
        finally:
            daemon.monitoring.stop()
            daemon.store.close()
        embedding = [r for e in evaluations for r in e.results
                     if r.metric == "embedding" and r.statistic is not None]
        print("evaluations", len(evaluations), "embedding", len(embedding))
        print("loaded", sorted(m for m in ("evidently", "torch", "transformers",
                                           "detectors.embeddings", "detectors.suite")
                               if m in sys.modules))
    """)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}",
           "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1"}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "evaluations 1 embedding 1" in done.stdout, done.stdout + done.stderr[-3000:]
    assert "loaded []" in done.stdout, done.stdout
