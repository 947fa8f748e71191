"""The evaluator on the daemon's real path: events -> windows + label join -> detectors -> gauges.

Statistical assertions are bounds with seeded generators (no exact indices)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from daemon.assembly import build_monitoring
from daemon.config import parse_config
from daemon.events import FeedbackEvent, InferenceEvent, Output
from daemon.ingest.batch import PartitionBatch
from daemon.monitor.evaluation import Evaluation
from detectors.result import Verdict

WINDOW = 2000
LABEL_DELAY = 300  # feedback arrives this many events after its inference


def _config(evaluator: dict[str, object], **model: object) -> object:
    return parse_config({"evaluation": evaluator, "models": [{
        "name": "m",
        "window": {"size": WINDOW},
        "reference": {"first_n": WINDOW},
        "evaluation": {"interval": 3600, "every_events": WINDOW, "min_events": WINDOW,
                       "embedding_sample": 0},
        "detectors": {"accuracy": {"min_labels": 300},
                      "drift": {"texts": [{"column": "input_text"}]},
                      "latency": {"p95_ms": 250.0}},
        **model,
    }]})


class Stream:
    """Seeded review-like traffic; ``shift`` swaps in unseen words, ``accuracy`` is the model's."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.i = 0
        self.pending: list[tuple[int, FeedbackEvent]] = []
        weights = 1.0 / np.arange(1, 801)
        self.p = weights / weights.sum()

    def batch(self, n: int, *, accuracy: float = 0.92, vocab: str = "w",
              latency_ms: float = 60.0, label_share: float = 0.8) -> list:
        out: list = []
        rng = self.rng
        for _ in range(n):
            i = self.i
            self.i += 1
            words = rng.choice(800, size=int(rng.integers(4, 30)), p=self.p)
            truth = "positive" if rng.random() < 0.5 else "negative"
            right = rng.random() < accuracy
            predicted = truth if right else ("negative" if truth == "positive" else "positive")
            out.append(InferenceEvent(
                request_id=f"r{i}", ts=1_764_000_000_000 + i * 10, model="m", model_version="1",
                latency_ms=float(rng.gamma(4.0, latency_ms / 4.0)),
                input={"text": " ".join(f"{vocab}{w}" for w in words)},
                output=Output(label=predicted, score=float(rng.uniform(0.5, 1.0)))))
            if rng.random() < label_share:
                self.pending.append((i + LABEL_DELAY, FeedbackEvent(
                    request_id=f"r{i}", ts=1_764_000_000_000 + (i + LABEL_DELAY) * 10,
                    model="m", label=truth)))
            while self.pending and self.pending[0][0] <= i:
                out.append(self.pending.pop(0)[1])
        return out


class Harness:
    """The monitor as the daemon builds it; passes in a thread unless ``evaluator`` says
    otherwise (the root config's ``evaluation`` section)."""

    def __init__(self, evaluator: dict[str, object] | None = None, **model: object) -> None:
        self.registry = CollectorRegistry()
        self.evaluations: list[Evaluation] = []
        self.monitoring = build_monitoring(_config(evaluator or {"isolation": "thread"},
                                                   **model), self.registry,
                                           [self.evaluations.append])
        self.offset = 0

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.monitoring.stop()

    def apply(self, events: list) -> None:
        self.monitoring.windows.apply(PartitionBatch("t", 0, events, self.offset,
                                                     self.offset + len(events) - 1))
        self.offset += len(events)

    def feed(self, events: list) -> list[Evaluation]:
        """Apply events in batches of 500, evaluating each time a window's worth arrived."""
        produced: list[Evaluation] = []
        for start in range(0, len(events), 500):
            self.apply(events[start:start + 500])
            windows = self.monitoring.windows.get("m")
            if windows is not None and windows.new_events >= WINDOW:
                produced += self.monitoring.evaluator.run_model("m")
        return produced


def _breached(evaluations: list[Evaluation], detector: str) -> list[Evaluation]:
    return [e for e in evaluations if any(r.detector == detector and r.breached
                                          for r in e.results)]


@pytest.mark.slow
def test_no_breach_over_60k_stationary_events() -> None:
    harness = Harness()
    stream = Stream(seed=1)
    evaluations = harness.feed(stream.batch(60_000))
    assert len(evaluations) >= 25
    breaches = [r.key for e in evaluations for r in e.breaches]
    assert breaches == []
    accuracy = [r for e in evaluations for r in e.results if r.detector == "accuracy"]
    assert accuracy and all(r.verdict is Verdict.OK for r in accuracy)


def test_new_vocabulary_is_detected_within_two_windows() -> None:
    harness = Harness()
    stream = Stream(seed=2)
    before = harness.feed(stream.batch(4 * WINDOW))
    assert before and not any(e.breached for e in before)
    after = harness.feed(stream.batch(2 * WINDOW + 1, vocab="z"))
    drift = _breached(after, "drift")
    assert drift, "a new vocabulary went unnoticed for two windows"
    keys = {r.key for r in drift[0].breaches}
    assert any("oov" in k for k in keys), keys


def test_accuracy_drop_is_detected_once_delayed_labels_arrive() -> None:
    harness = Harness()
    stream = Stream(seed=3)
    harness.feed(stream.batch(3 * WINDOW))
    after = harness.feed(stream.batch(3 * WINDOW, accuracy=0.6))
    assert _breached(after, "accuracy"), "a 30-point accuracy drop went unnoticed"
    first = _breached(after, "accuracy")[0]
    result = next(r for r in first.results if r.detector == "accuracy" and r.breached)
    assert result.statistic is not None and result.statistic < result.threshold


def test_no_accuracy_verdict_while_labels_are_too_few() -> None:
    harness = Harness()
    stream = Stream(seed=4)
    evaluations = harness.feed(stream.batch(4 * WINDOW, accuracy=0.5, label_share=0.05))
    accuracy = [r for e in evaluations for r in e.results if r.detector == "accuracy"]
    assert accuracy and all(r.verdict is Verdict.INSUFFICIENT for r in accuracy)
    assert not _breached(evaluations, "accuracy")


def test_latency_regression_is_detected_and_exported() -> None:
    harness = Harness()
    stream = Stream(seed=5)
    harness.feed(stream.batch(2 * WINDOW))
    after = harness.feed(stream.batch(2 * WINDOW, latency_ms=400.0))
    assert _breached(after, "latency")
    text = generate_latest(harness.registry).decode()
    assert 'lifeguard_detector_breached{column="",detector="latency",metric="p95_ms"' in text
    assert "lifeguard_detector_threshold" in text and "lifeguard_detector_statistic" in text


def test_evaluations_of_the_same_data_have_the_same_id() -> None:
    ids = []
    for _ in range(2):
        harness = Harness()
        harness.feed(Stream(seed=6).batch(2 * WINDOW))
        ids.append([e.id for e in harness.evaluations])
    assert ids[0] and ids[0] == ids[1]


def test_a_generator_window_embeds_prompts_and_answers_each_once() -> None:
    import pandas as pd

    from daemon.monitor.config import EvaluationConfig
    from daemon.monitor.detector_pass import ModelPasses, ModelSpec, PassEngine
    from daemon.monitor.pass_caches import EmbeddingCache
    from detectors.config import SuiteConfig
    from detectors.suite import DetectorSuite

    embedded: list[str] = []

    class Encoder:  # an in-memory encoder: this tests which texts are embedded, not MiniLM
        def embed(self, texts: list[str]) -> np.ndarray:
            embedded.extend(texts)
            return np.asarray([[len(t), 1.0] for t in texts], dtype=np.float32)

    suite = SuiteConfig(task="causal-lm")
    model = ModelPasses(ModelSpec("m", suite, EvaluationConfig(embedding_sample=10)),
                        DetectorSuite(suite), EmbeddingCache(Encoder))
    frame = pd.DataFrame({"request_id": ["a", "b", "c"], "input_text": ["hi", "reset?", None],
                          "output_text": ["hello there", None, "ok"]})
    window = PassEngine.window(model, frame)
    assert set(window.embeddings) == {"input_text", "output_text"}
    assert window.embeddings["output_text"][:, 0].tolist() == [11.0, 2.0]
    PassEngine.window(model, frame)
    assert sorted(embedded) == sorted(["hi", "reset?", "hello there", "ok"])  # once each


def test_a_causal_lm_model_gets_the_generator_detectors_and_no_end_to_end_slo() -> None:
    from daemon.assembly import spec_of
    from detectors.suite import DetectorSuite

    model = parse_config({"models": [{"name": "support", "task": "causal-lm"}]}).models[0]
    suite = DetectorSuite(spec_of(model, Path("reports")).suite)
    assert suite.generation is not None and suite.quality is not None
    assert suite.latency is not None and suite.latency.slos == {}
    assert {t.column for t in suite.texts if t.embedding} == {"input_text", "output_text"}


def test_a_released_partition_takes_its_models_gauges_along() -> None:
    with Harness() as harness:
        stream = Stream(seed=5)
        assert harness.feed(stream.batch(2 * WINDOW))
        text = generate_latest(harness.registry).decode()
        assert 'lifeguard_detector_statistic{' in text and 'model="m"' in text
        # The partition moves to another instance: windows drop, the evaluator forgets.
        harness.monitoring.windows.release([("t", 0)])
        harness.monitoring.evaluator.prune()
        after = generate_latest(harness.registry).decode()
        assert not [line for line in after.splitlines()
                    if line.startswith("lifeguard_detector_statistic{") and 'model="m"' in line]
