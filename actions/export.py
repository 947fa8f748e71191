"""ONNX export of a save_pretrained model: a ``logits`` graph with dynamic batch and sequence
axes (a causal LM's with its KV cache, actions.export_lm), written per the model artifact
contract and checked against PyTorch on fresh inputs: logits, and a causal LM's generated tokens.
Weights over ``EXTERNAL_DATA_BYTES`` go to ``model.onnx.data`` (protobuf stops at 2 GB).

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
from deploy.inference import load_onnx
from deploy.model_artifact import DATA_FILE, MODEL_FILE, ModelInfo

OPSET = 18
EXTERNAL_DATA_BYTES = 2**31 - 2**26  # under protobuf's 2 GiB limit, with room for the graph


@dataclass(frozen=True)
class ExportReport:
    task: str
    exporter: str  # "dynamo" or "legacy" (when the dynamo exporter failed)
    max_abs_diff: float
    parity_atol: float
    seconds: float
    onnx_bytes: int  # the graph and its weights, external data included
    kv_cache: bool = False
    external_data: bool = False
    # causal LMs: prompts whose greedy continuation is token-for-token PyTorch's, of how many
    token_parity: str | None = None


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


def _export(wrapper: Any, example: tuple[Any, ...], path: Path, names: tuple[list[str], list[str]],
            dynamic: dict[str, Any], legacy_axes: dict[str, dict[int, str]],
            external_bytes: int) -> tuple[str, bool]:
    """(exporter used, weights written as external data)."""
    import onnx
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapper, example, dynamo=True, opset_version=OPSET, verbose=False,
                dynamic_shapes=dynamic, input_names=names[0], output_names=names[1],
            )
        model = program.model_proto  # type: ignore[union-attr]
        exporter = "dynamo"
    except Exception:  # the dynamo exporter rejects some graphs: fall back, and say so
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper, example, str(path), dynamo=False, opset_version=OPSET,
                dynamic_axes=legacy_axes, input_names=names[0], output_names=names[1],
            )
        model = onnx.load(str(path))
        exporter = "legacy"
    strip_initializer_value_info(model)
    return exporter, save_onnx(model, path, external_bytes)


def save_onnx(model: Any, path: Path, external_bytes: int = EXTERNAL_DATA_BYTES) -> bool:
    """Write ``model`` to ``path``; its weights go to ``DATA_FILE`` beside it when they exceed
    ``external_bytes``. Returns whether they did."""
    import onnx

    weights = sum(init.ByteSize() for init in model.graph.initializer)
    external = weights > external_bytes
    (path.parent / DATA_FILE).unlink(missing_ok=True)  # save appends to an existing one
    onnx.save_model(model, str(path), save_as_external_data=external,
                    all_tensors_to_one_file=True, location=DATA_FILE, size_threshold=1024)
    return external


def fresh_inputs(vocab_size: int, batch: int, seq: int, seed: int) -> tuple[Any, Any]:
    """Random token ids unlike the trace's, with the last row right-padded (masks exercised)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(low=min(5, vocab_size - 1), high=vocab_size, size=(batch, seq))
    mask = np.ones((batch, seq), dtype=np.int64)
    mask[-1, seq // 2 :] = 0
    return ids.astype(np.int64), mask


def parity(tm: TorchModel, out_dir: Path, threads: int | None, seed: int) -> float:
    """Max |logit difference| between PyTorch and onnxruntime over fresh inputs of two shapes
    (a causal LM's graph runs them on an empty cache)."""
    import torch

    exported = load_onnx(out_dir, device="cpu", threads=threads)
    vocab = int(tm.model.config.vocab_size)
    worst = 0.0
    for k, (batch, seq) in enumerate([(3, 11), (1, min(tm.max_length, 29))]):
        ids, mask = fresh_inputs(vocab, batch, seq, seed + k)
        with torch.no_grad():
            ref = tm.logits_from_ids(torch.from_numpy(ids), torch.from_numpy(mask))
        got = exported.run(ids, mask)
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
    external_data_bytes: int = EXTERNAL_DATA_BYTES,
) -> ExportReport:
    """Export ``model_dir`` into ``out_dir`` (model.onnx, tokenizer, model_info.json; the
    recorded max_length is ``max_length`` capped by the model's own limit); raise ParityError
    when onnxruntime's logits are further than ``parity_atol`` from PyTorch's, or when a causal
    LM's greedy continuations differ from PyTorch's in any token."""
    import torch

    from actions import export_lm

    if parity_atol <= 0:
        raise ValueError("parity_atol must be > 0")
    started = time.perf_counter()
    tm = load_torch_model(model_dir, device="cpu", threads=threads)
    length = min(max_length, tm.max_length) if max_length else tm.max_length
    if length < 2:
        raise BadInput(f"{model_dir}: max_length {length} is too short to export")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = int(tm.model.config.vocab_size)
    path = out_dir / MODEL_FILE
    kv = tm.task == "causal-lm"
    if kv:
        layers = export_lm.kv_shape(tm.model.config)[0]
        names = export_lm.io_names(layers)
        axes = {n: {0: "batch", 2: "past"} for n in names[0][3:]}
        axes.update({"input_ids": {0: "batch", 1: "seq"}, "position_ids": {0: "batch", 1: "seq"},
                     "attention_mask": {0: "batch", 1: "total"}})
        exporter, external = _export(export_lm.wrap(tm.model),
                                     export_lm.example_inputs(tm.model.config, vocab), path,
                                     names, export_lm.dynamic_shapes(layers), axes,
                                     external_data_bytes)
    else:
        ids, mask = fresh_inputs(vocab, 2, min(8, length), seed + 100)
        batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
        exporter, external = _export(
            _LogitsOnly.wrap(tm.model),
            (torch.from_numpy(ids), torch.ones_like(torch.from_numpy(mask))), path,
            (["input_ids", "attention_mask"], ["logits"]),
            {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
            {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
             "logits": {0: "batch"}}, external_data_bytes)
    tm.tokenizer.save_pretrained(str(out_dir))
    ModelInfo(task=tm.task, max_length=length, precision="fp32", labels=tm.labels,
              kv_cache=export_lm.kv_shape(tm.model.config) if kv else None).write(out_dir)
    diff = parity(tm, out_dir, threads, seed)
    if not diff <= parity_atol:  # also catches NaN
        raise ParityError(
            f"ONNX logits differ from PyTorch by {diff:.3g} (bound {parity_atol:g})", diff
        )
    tokens = None
    if kv:
        from deploy.inference import OnnxCausalLM

        check = export_lm.token_parity(tm, OnnxCausalLM.from_dir(out_dir, "cpu", threads))
        tokens = f"{check.identical}/{check.prompts}"
        if not check.ok:
            raise ParityError(f"ONNX greedy tokens differ from PyTorch's on "
                              f"{check.prompts - check.identical} of {check.prompts} prompts: "
                              f"{check.first_mismatch}", diff)
    size = path.stat().st_size + ((out_dir / DATA_FILE).stat().st_size if external else 0)
    return ExportReport(
        task=tm.task, exporter=exporter, max_abs_diff=diff, parity_atol=parity_atol,
        seconds=time.perf_counter() - started, onnx_bytes=size, kv_cache=kv,
        external_data=external, token_parity=tokens,
    )


# --- the export_onnx step ---

NAME = "export_onnx"
VERSION = 2  # 2: causal LMs carry their KV cache and pass generated-token parity


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
