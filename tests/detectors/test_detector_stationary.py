"""The suite's false-alarm rate on stationary traffic, and how fast it sees a vocabulary shift."""

from __future__ import annotations

import pytest
from detector_synth import Traffic

from detectors.config import AccuracyConfig, SuiteConfig
from detectors.result import Verdict
from detectors.suite import DetectorSuite, WindowData

WINDOW = 1000


@pytest.mark.slow
def test_no_breach_over_200k_stationary_events() -> None:
    source = Traffic(seed=7)
    config = SuiteConfig(accuracy=AccuracyConfig(segment_column="language"))
    suite = DetectorSuite(config)
    reference = suite.prepare(WindowData(source.frame(10_000), {
        "input_text": source.embeddings(10_000)}))
    breaches, decided, kinds = [], 0, set()
    for _ in range(200_000 // WINDOW):
        current = WindowData(source.frame(WINDOW, label_share=0.3),
                             {"input_text": source.embeddings(WINDOW)})
        results = suite.run(reference, current)
        breaches += [r.key for r in results if r.breached]
        decided += sum(r.verdict is not Verdict.INSUFFICIENT for r in results)
        kinds |= {r.key for r in results if r.verdict is not Verdict.INSUFFICIENT}
    assert breaches == []
    # It decided things: every drift column, latency, accuracy overall and per segment.
    assert {"drift.oov[input_text]", "drift.embedding[input_text]", "drift.length[input_text]",
            "drift.distribution[prediction]", "latency.p95_ms",
            "accuracy.accuracy_vs_reference", "accuracy.accuracy_segment_gap"} <= kinds
    assert decided >= 200 * 10


def test_new_vocabulary_detected_within_two_windows() -> None:
    source = Traffic(seed=11)
    suite = DetectorSuite()
    reference = suite.prepare(source.frame(5000))
    # Stationary windows first, then the shift starts halfway through a window.
    for _ in range(3):
        assert not any(r.breached for r in suite.run(reference, source.frame(WINDOW)))
    import pandas as pd

    half = pd.concat([source.frame(WINDOW // 2), source.frame(WINDOW // 2, vocab_offset=50_000)],
                     ignore_index=True)
    windows = [half, source.frame(WINDOW, vocab_offset=50_000)]
    fired = [{r.key for r in suite.run(reference, w) if r.breached} for w in windows]
    assert any("drift.oov[input_text]" in f for f in fired)
    # Nothing but input drift fires: the shift is in the text only.
    assert all(k.startswith("drift.") and "[input_text]" in k for f in fired for k in f)
