"""Dynamic int8 quantization of an exported model directory (onnxruntime, per-channel weights),
and the quantize step: keep int8 only when it holds accuracy against the fp32 export."""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actions.artifacts import input_digest, publish, step_key, step_result
from actions.contract import StepContext, StepResult
from actions.errors import BadInput
from deploy.model_artifact import ARTIFACT_FILE, DATA_FILE, INFO_FILE, MODEL_FILE, ModelInfo

# MatMul carries the transformer's compute; Gather is the embedding tables, which in a small
# encoder such as MiniLM hold about half the weights: quantizing them is most of the size win.
OPS_WITH_EMBEDDINGS = ("MatMul", "Gather")
OPS_COMPUTE_ONLY = ("MatMul",)


@dataclass(frozen=True)
class QuantizeReport:
    fp32_bytes: int
    int8_bytes: int
    op_types: tuple[str, ...]

    @property
    def size_ratio(self) -> float:
        return self.int8_bytes / self.fp32_bytes


def copy_companions(src_dir: Path, out_dir: Path) -> None:
    """Everything in an exported directory except the graph, its weights and its records (the
    tokenizer files)."""
    for path in Path(src_dir).iterdir():
        if path.is_file() and path.name not in (MODEL_FILE, DATA_FILE, INFO_FILE, ARTIFACT_FILE):
            shutil.copy2(path, Path(out_dir) / path.name)


def quantize_model(
    src_dir: Path, out_dir: Path, *, per_channel: bool = True, embeddings: bool = True
) -> QuantizeReport:
    """Write an int8 copy of the exported directory ``src_dir`` into ``out_dir``."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from actions.export import strip_initializer_value_info

    src_dir, out_dir = Path(src_dir), Path(out_dir)
    if not (src_dir / MODEL_FILE).is_file():
        raise BadInput(f"{src_dir}: no {MODEL_FILE} to quantize")
    info = ModelInfo.read(src_dir)
    if info.precision != "fp32":
        raise BadInput(f"{src_dir}: already {info.precision}")
    out_dir.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(src_dir / MODEL_FILE))
    strip_initializer_value_info(model)  # else quantize_dynamic's shape inference conflicts
    ops = OPS_WITH_EMBEDDINGS if embeddings else OPS_COMPUTE_ONLY
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(max(quiet, logging.WARNING))  # it logs every skipped node
    try:
        quantize_dynamic(
            model, out_dir / MODEL_FILE, op_types_to_quantize=list(ops),
            per_channel=per_channel, weight_type=QuantType.QInt8,
            # weights beside the graph (model.onnx.data) when the fp32 export had them there
            use_external_data_format=(src_dir / DATA_FILE).is_file(),
        )
    finally:
        logging.getLogger().setLevel(quiet)
    copy_companions(src_dir, out_dir)
    ModelInfo(info.task, info.max_length, "int8", info.labels, info.kv_cache).write(out_dir)
    return QuantizeReport(
        fp32_bytes=onnx_bytes(src_dir), int8_bytes=onnx_bytes(out_dir),
        op_types=ops,
    )


def onnx_bytes(model_dir: Path) -> int:
    """The graph and its external weights."""
    return sum((Path(model_dir) / name).stat().st_size for name in (MODEL_FILE, DATA_FILE)
               if (Path(model_dir) / name).is_file())


def keep_fp32(src_dir: Path, out_dir: Path, reason: str) -> None:
    """The fallback: ship the fp32 export unchanged, with the reason beside it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src_dir / MODEL_FILE, out_dir / MODEL_FILE)
    if (src_dir / DATA_FILE).is_file():
        shutil.copy2(src_dir / DATA_FILE, out_dir / DATA_FILE)
    shutil.copy2(src_dir / INFO_FILE, out_dir / INFO_FILE)
    copy_companions(src_dir, out_dir)
    (out_dir / "quantize_fallback.json").write_text(json.dumps({"reason": reason}) + "\n")


def info_dict(report: QuantizeReport) -> dict[str, Any]:
    return {"fp32_bytes": report.fp32_bytes, "int8_bytes": report.int8_bytes,
            "size_ratio": round(report.size_ratio, 4), "op_types": list(report.op_types)}


# --- the quantize step ---

NAME = "quantize"
VERSION = 1


def run(ctx: StepContext) -> StepResult:
    """int8 when it holds up on the gate's holdout against the fp32 export, else fp32 (said so
    in the metadata: ``precision``, ``fallback``, ``reason``)."""
    from actions.evaluate import holdout_rows, score
    from actions.torch_models import load_any

    p = ctx.policy
    model_dir = ctx.input_model()
    inputs = {
        "model": input_digest(model_dir),
        "snapshot": input_digest(ctx.snapshot),
        "policy": p.model_dump(include={"holdout_fraction", "min_holdout_rows",
                                        "max_quantize_drop", "max_quantize_nll_increase",
                                        "quantize_embeddings"}),
    }
    key = step_key(NAME, VERSION, inputs)

    def build(out: Path) -> dict[str, Any]:
        rows = holdout_rows(ctx)
        candidate = out.parent / f"{out.name}.int8"
        shutil.rmtree(candidate, ignore_errors=True)
        try:
            report = quantize_model(model_dir, candidate, embeddings=p.quantize_embeddings)
            fp32 = load_any(model_dir, ctx.device, ctx.threads)
            metric, base, n = score(fp32, rows, p.min_holdout_rows)
            int8_score = score(load_any(candidate, ctx.device, ctx.threads), rows,
                               p.min_holdout_rows)[1]
            if metric == "accuracy":
                loss = base - int8_score
                ok, allowed = loss <= p.max_quantize_drop + 1e-12, p.max_quantize_drop
            else:  # perplexity: compare mean NLLs, relative rise
                loss = math.log(int8_score) / math.log(base) - 1 if base > 1 else 0.0
                ok, allowed = loss <= p.max_quantize_nll_increase, p.max_quantize_nll_increase
            meta: dict[str, Any] = {
                "metric": metric, "fp32_score": round(base, 6), "int8_score": round(int8_score, 6),
                "loss": round(loss, 6), "allowed": allowed, "rows": n, **info_dict(report),
            }
            if ok:
                for path in candidate.iterdir():
                    shutil.move(str(path), out / path.name)
                return {**meta, "precision": "int8", "fallback": False, "reason": ""}
            reason = (f"int8 {metric} {int8_score:.4f} vs fp32 {base:.4f}: loss {loss:.4f} "
                      f"exceeds the allowed {allowed:g}; shipping fp32")
            keep_fp32(model_dir, out, reason)
            return {**meta, "precision": "fp32", "fallback": True, "reason": reason}
        finally:
            shutil.rmtree(candidate, ignore_errors=True)

    pub = publish(ctx.output_dir, NAME, key, ctx.run_id, inputs, build)
    return step_result(NAME, pub, pub.path)
