"""ONNX export of a save_pretrained model: a ``logits`` graph with dynamic batch and sequence
axes, written per the model artifact contract and checked against PyTorch on fresh inputs.

Measured facts this code depends on: torch 2.13's default (dynamo) exporter needs onnxscript;
its graphs carry ``value_info`` for initializers that make onnxruntime's ``quantize_dynamic``
fail shape inference, so those entries are stripped here; the legacy exporter is the fallback.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from actions.artifacts import input_digest, publish, step_key, step_result
from actions.contract import StepContext, StepResult
from actions.errors import BadInput, ParityError
from actions.torch_models import TorchModel, load_torch_model
from deploy.inference import MODEL_FILE, ModelInfo, create_session

OPSET = 18


@dataclass(frozen=True)
class ExportReport:
    task: str
    exporter: str  # "dynamo" or "legacy" (when the dynamo exporter failed)
    max_abs_diff: float
    parity_atol: float
    seconds: float
    onnx_bytes: int


class _LogitsOnly:
    """Wraps a transformers model so the graph has exactly the contract's inputs and output."""

    @staticmethod
    def wrap(model: Any) -> Any:
        import torch

        class Logits(torch.nn.Module):
            def __init__(self, inner: Any):
                super().__init__()
                self.inner = inner

            def forward(self, input_ids: Any, attention_mask: Any) -> Any:
                kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
                if getattr(self.inner.config, "use_cache", None) is not None:
                    kwargs["use_cache"] = False  # no KV cache in the contract's graph
                return self.inner(**kwargs).logits

        return Logits(model)


def strip_initializer_value_info(model: Any) -> int:
    """Drop ``value_info`` entries that describe initializers; returns how many were dropped."""
    names = {init.name for init in model.graph.initializer}
    keep = [vi for vi in model.graph.value_info if vi.name not in names]
    dropped = len(model.graph.value_info) - len(keep)
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep)
    return dropped


def _export(wrapper: Any, example: tuple[Any, Any], path: Path) -> str:
    import onnx
    import torch

    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    names: dict[str, Any] = {"input_names": ["input_ids", "attention_mask"],
                             "output_names": ["logits"]}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapper, example, dynamo=True, opset_version=OPSET, verbose=False,
                dynamic_shapes={"input_ids": {0: batch, 1: seq},
                                "attention_mask": {0: batch, 1: seq}},
                **names,
            )
        model = program.model_proto  # type: ignore[union-attr]
        exporter = "dynamo"
    except Exception:  # the dynamo exporter rejects some graphs: fall back, and say so
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper, example, str(path), dynamo=False, opset_version=OPSET,
                dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                              "attention_mask": {0: "batch", 1: "seq"},
                              "logits": {0: "batch"}},
                **names,
            )
        model = onnx.load(str(path))
        exporter = "legacy"
    strip_initializer_value_info(model)
    onnx.save_model(model, str(path), save_as_external_data=False)
    return exporter


def fresh_inputs(vocab_size: int, batch: int, seq: int, seed: int) -> tuple[Any, Any]:
    """Random token ids unlike the trace's, with the last row right-padded (masks exercised)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(low=min(5, vocab_size - 1), high=vocab_size, size=(batch, seq))
    mask = np.ones((batch, seq), dtype=np.int64)
    mask[-1, seq // 2 :] = 0
    return ids.astype(np.int64), mask


def parity(tm: TorchModel, onnx_path: Path, threads: int | None, seed: int) -> float:
    """Max |logit difference| between PyTorch and onnxruntime over fresh inputs of two shapes."""
    import torch

    session = create_session(onnx_path, device="cpu", threads=threads)
    vocab = int(tm.model.config.vocab_size)
    worst = 0.0
    for k, (batch, seq) in enumerate([(3, 11), (1, min(tm.max_length, 29))]):
        ids, mask = fresh_inputs(vocab, batch, seq, seed + k)
        with torch.no_grad():
            ref = tm.logits_from_ids(torch.from_numpy(ids), torch.from_numpy(mask))
        got = session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
        if tm.task == "causal-lm":  # positions after the padding are not part of any answer
            keep = mask.astype(bool)
            ref, got = ref[keep], got[keep]
        worst = max(worst, float(np.abs(ref - got).max()))
    return worst


def export_model(
    model_dir: Path,
    out_dir: Path,
    *,
    max_length: int | None = None,
    parity_atol: float = 1e-3,
    threads: int | None = None,
    seed: int = 0,
) -> ExportReport:
    """Export ``model_dir`` into ``out_dir`` (model.onnx, tokenizer, model_info.json; the
    recorded max_length is ``max_length`` capped by the model's own limit); raise ParityError
    when onnxruntime's logits are further than ``parity_atol`` from PyTorch's."""
    import torch

    if parity_atol <= 0:
        raise ValueError("parity_atol must be > 0")
    started = time.perf_counter()
    tm = load_torch_model(model_dir, device="cpu", threads=threads)
    length = min(max_length, tm.max_length) if max_length else tm.max_length
    if length < 2:
        raise BadInput(f"{model_dir}: max_length {length} is too short to export")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ids, mask = fresh_inputs(int(tm.model.config.vocab_size), 2, min(8, length), seed + 100)
    example = (torch.from_numpy(ids), torch.ones_like(torch.from_numpy(mask)))
    exporter = _export(_LogitsOnly.wrap(tm.model), example, out_dir / MODEL_FILE)
    tm.tokenizer.save_pretrained(str(out_dir))
    ModelInfo(task=tm.task, max_length=length, precision="fp32", labels=tm.labels).write(out_dir)
    diff = parity(tm, out_dir / MODEL_FILE, threads, seed)
    if not diff <= parity_atol:  # also catches NaN
        raise ParityError(
            f"ONNX logits differ from PyTorch by {diff:.3g} (bound {parity_atol:g})", diff
        )
    return ExportReport(
        task=tm.task, exporter=exporter, max_abs_diff=diff, parity_atol=parity_atol,
        seconds=time.perf_counter() - started, onnx_bytes=(out_dir / MODEL_FILE).stat().st_size,
    )


# --- the export_onnx step ---

NAME = "export_onnx"
VERSION = 1


def run(ctx: StepContext) -> StepResult:
    model_dir = ctx.input_model()
    inputs = {
        "model": input_digest(model_dir),
        "max_length": ctx.train.max_length,
        "parity_atol": ctx.policy.parity_atol,
        "opset": OPSET,
    }
    key = step_key(NAME, VERSION, inputs)

    def build(out: Path) -> dict[str, Any]:
        report = export_model(
            model_dir, out, max_length=ctx.train.max_length,
            parity_atol=ctx.policy.parity_atol, threads=ctx.threads, seed=ctx.train.seed,
        )
        return asdict(report)

    pub = publish(ctx.output_dir, NAME, key, ctx.run_id, inputs, build)
    return step_result(NAME, pub, pub.path)
