"""The steps on a tiny BERT-style classifier whose production traffic moved to another domain:
fine-tune learns it, the gate tells better from worse, export and quantize keep its answers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from actions.contract import StepContext, StepResult
from actions.errors import GateFailed, ParityError
from actions.progress import ActionMetrics, Progress
from actions.settings import ActionPolicy
from actions.snapshot import read_snapshot, split_holdout
from actions.steps import STEPS, run_pipeline, run_step
from deploy.inference import OnnxClassifier, load_onnx
from deploy.model_artifact import ModelInfo
from lifeguard.errors import IntegrityError
from lifeguard.files import sha256_file


def test_registry_names_every_step() -> None:
    assert set(STEPS) == {"fine_tune", "evaluate", "export_onnx", "quantize", "prune", "deploy"}


def test_fine_tune_lowers_the_loss_and_reports_progress(clf_ctx: StepContext,
                                                        tuned: StepResult) -> None:
    m = tuned.evidence
    assert m["loss_after"] < 0.7 * m["loss_before"]
    assert m["steps"] > 0 and m["resumed_from_step"] == 0
    assert m["replay_rows"] > 0 and m["skipped_rows"] == 1  # the row with an unknown label
    # a 20% replay share: replay / (train + replay) close to 0.2
    assert abs(m["replay_rows"] / (m["train_rows"] + m["replay_rows"]) - 0.2) < 0.02
    assert (tuned.model_dir / "model.safetensors").is_file()
    assert not any(tuned.model_dir.glob("*.bin"))  # never a pickle
    assert (tuned.model_dir / "artifact.json").is_file()


def test_holdout_rows_never_reach_training(clf_ctx: StepContext) -> None:
    from actions.fine_tune import training_examples
    from actions.torch_models import load_torch_model

    tm = load_torch_model(clf_ctx.model_dir, "cpu", 2)
    examples, counts = training_examples(clf_ctx, tm)
    assert clf_ctx.snapshot is not None
    _, holdout = split_holdout(read_snapshot(clf_ctx.snapshot), 0.2)
    trained_texts = {text for text, _ in examples}
    assert holdout and counts["holdout_rows"] == len(holdout)
    assert not trained_texts & {r.text for r in holdout}


def test_rerun_on_the_same_inputs_is_a_no_op(clf_ctx: StepContext, tuned: StepResult) -> None:
    seen: list[Progress] = []
    again = run_step("fine_tune", clf_ctx.replace(run_id="another", progress=seen.append))
    assert again.cached and not seen  # no training step ran
    assert again.artifacts == tuned.artifacts  # the same folder, the same sums


def test_interrupted_fine_tune_resumes_to_the_same_weights(
    clf_ctx: StepContext, tuned: StepResult, tmp_path: Path
) -> None:
    from safetensors.numpy import load_file

    class Crash(Exception):
        pass

    def crash_at_25(p: Progress) -> None:
        if p.current == 25:
            raise Crash

    ctx = clf_ctx.replace(output_dir=tmp_path, progress=crash_at_25)
    with pytest.raises(Crash):
        run_step("fine_tune", ctx)
    assert not list(tmp_path.glob("fine_tune-*"))  # nothing half-written under the final name
    resumed = run_step("fine_tune", ctx.replace(progress=None))
    assert resumed.evidence["resumed_from_step"] == 20  # checkpoints every 10 steps
    assert not list(tmp_path.glob(".work-*"))  # checkpoints are gone once published
    a = load_file(str(tuned.model_dir / "model.safetensors"))
    b = load_file(str(resumed.model_dir / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-5, err_msg=name)


def test_gate_passes_a_better_candidate(clf_ctx: StepContext, tuned: StepResult) -> None:
    result = run_step("evaluate", clf_ctx.with_model(tuned.model_dir))
    m = result.evidence
    assert m["passed"] and m["metric"] == "accuracy"
    assert m["candidate"] >= m["champion"] + 0.1  # the domain shift was learned
    assert result.model_dir == tuned.model_dir  # the candidate goes on to export
    gate_dir = result.artifacts["evaluate"].path
    assert json.loads((gate_dir / "gate.json").read_text())["passed"] is True


def test_gate_fails_a_worse_candidate_and_keeps_failing(clf_ctx: StepContext,
                                                        tuned: StepResult) -> None:
    ctx = clf_ctx.replace(model_dir=clf_ctx.model_dir, champion_dir=tuned.model_dir)
    with pytest.raises(GateFailed) as info:
        run_step("evaluate", ctx)
    ev = info.value.evidence
    assert not ev["passed"] and ev["candidate"] < ev["champion"]
    assert ev["cached"] is False
    with pytest.raises(GateFailed) as again:  # the cached verdict fails the same way
        run_step("evaluate", ctx)
    assert again.value.evidence == {**ev, "cached": True}


def test_gate_applies_the_absolute_floor(clf_ctx: StepContext, tuned: StepResult) -> None:
    ctx = clf_ctx.replace(model_dir=tuned.model_dir, champion_dir=None,
                          policy=ActionPolicy(gate_floor=0.999))
    with pytest.raises(GateFailed, match="floor"):
        run_step("evaluate", ctx)


def test_export_matches_pytorch_with_dynamic_axes(tuned: StepResult,
                                                  exported: StepResult) -> None:
    from actions.torch_models import load_torch_model
    from harness.tiny_models import review_corpus

    assert exported.evidence["max_abs_diff"] <= 1e-3
    info = ModelInfo.read(exported.model_dir)
    assert (info.task, info.precision, info.labels) == (
        "sequence-classification", "fp32", ("negative", "positive"))
    onnx_model = OnnxClassifier.from_dir(exported.model_dir, device="cpu", threads=2)
    assert onnx_model.providers == ["CPUExecutionProvider"]
    torch_model = load_torch_model(tuned.model_dir, "cpu", 2)
    texts = [t for t, _ in review_corpus(7, "restaurants", seed=123)]
    texts[3] = texts[3] + " and again" * 5  # uneven lengths: padding inside a batch
    for batch in (texts[:1], texts):  # batch 1 and 7, different sequence lengths
        np.testing.assert_allclose(onnx_model.logits(batch), torch_model.logits(batch), atol=1e-4)
    preds = onnx_model.predict(texts)
    assert all(label in info.labels and 0.5 <= p <= 1.0 for label, p in preds)


def test_export_refuses_a_graph_that_differs_from_pytorch(
    tuned: StepResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from actions import export

    real_wrap = export._LogitsOnly.wrap

    def shifted(model):  # the graph computes logits + 0.5: what a broken exporter would do
        import torch

        inner = real_wrap(model)

        class Shifted(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_ids, attention_mask):
                return self.inner(input_ids, attention_mask) + 0.5

        return Shifted()

    monkeypatch.setattr(export._LogitsOnly, "wrap", staticmethod(shifted))
    with pytest.raises(ParityError) as info:
        export.export_model(tuned.model_dir, tmp_path / "x", threads=2)
    assert info.value.max_abs_diff == pytest.approx(0.5, abs=1e-3)


def test_quantize_keeps_accuracy_in_int8(clf_ctx: StepContext, exported: StepResult) -> None:
    result = run_step("quantize", clf_ctx.with_model(exported.model_dir))
    m = result.evidence
    assert m["precision"] == "int8" and not m["fallback"]
    assert m["fp32_score"] - m["int8_score"] <= 0.005
    assert m["int8_bytes"] < m["fp32_bytes"]
    model = load_onnx(result.model_dir, device="cpu", threads=2)
    assert model.info.precision == "int8"


def test_quantize_falls_back_to_fp32_when_int8_loses_accuracy(
    clf_ctx: StepContext, exported: StepResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnx
    from onnx import numpy_helper

    from actions import quantize

    real = quantize.quantize_model

    def lossy(src: Path, out: Path, **kwargs):  # real int8, then the classifier bias pushed
        report = real(src, out, **kwargs)        # to one class: accuracy falls to a coin's
        model = onnx.load(str(out / "model.onnx"))
        for init in model.graph.initializer:
            if init.name.endswith("classifier.bias"):
                arr = numpy_helper.to_array(init)
                init.CopyFrom(numpy_helper.from_array(arr + np.array([50.0, 0.0], np.float32),
                                                      init.name))
        onnx.save(model, str(out / "model.onnx"))
        return report

    monkeypatch.setattr(quantize, "quantize_model", lossy)
    ctx = clf_ctx.replace(model_dir=exported.model_dir, output_dir=tmp_path)
    result = run_step("quantize", ctx)
    m = result.evidence
    assert m["fallback"] and m["precision"] == "fp32" and "shipping fp32" in m["reason"]
    assert ModelInfo.read(result.model_dir).precision == "fp32"
    assert (sha256_file(result.model_dir / "model.onnx")
            == sha256_file(exported.model_dir / "model.onnx"))
    assert "reason" in json.loads((result.model_dir / "quantize_fallback.json").read_text())


def test_corrupted_artifacts_are_refused(clf_ctx: StepContext, tuned: StepResult,
                                         exported: StepResult, tmp_path: Path) -> None:
    bad_model = tmp_path / "tuned"
    shutil.copytree(tuned.model_dir, bad_model)
    weights = bad_model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"model\.safetensors"):
        run_step("export_onnx", clf_ctx.with_model(bad_model))

    bad_onnx = tmp_path / "onnx"
    shutil.copytree(exported.model_dir, bad_onnx)
    (bad_onnx / "model_info.json").write_text('{"task": "causal-lm"}')
    with pytest.raises(IntegrityError):
        load_onnx(bad_onnx)

    # a finished step folder that no longer matches its sums is not reused
    out = tmp_path / "out"
    ctx = clf_ctx.replace(output_dir=out)
    first = run_step("evaluate", ctx.with_model(tuned.model_dir))
    (first.artifacts["evaluate"].path / "gate.json").write_text('{"passed": true, "forged": 1}')
    with pytest.raises(IntegrityError, match=r"gate\.json"):
        run_step("evaluate", ctx.with_model(tuned.model_dir))


@pytest.mark.slow
def test_pipeline_end_to_end_with_metrics(clf_ctx: StepContext, tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    ctx = clf_ctx.replace(output_dir=tmp_path,
                          train=clf_ctx.train.model_copy(update={"epochs": 2}))
    results = run_pipeline(ctx, metrics=ActionMetrics(registry))
    assert [list(r.artifacts)[1] for r in results] == ["fine_tune", "evaluate", "export_onnx",
                                                       "quantize"]
    shipped = load_onnx(results[-1].model_dir, device="cpu", threads=2)
    assert shipped.info.precision in ("int8", "fp32")
    assert registry.get_sample_value("lifeguard_action_train_steps", {"step": "fine_tune"}) == (
        results[0].evidence["steps"])
    assert registry.get_sample_value(
        "lifeguard_action_steps_finished_total", {"step": "quantize", "outcome": "done"}) == 1
    loss = registry.get_sample_value("lifeguard_action_train_loss", {"step": "fine_tune"})
    assert loss is not None and loss > 0
