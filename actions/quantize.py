"""Dynamic int8 quantization of an exported model directory (onnxruntime, per-channel weights),
and the quantize step: keep int8 only when it holds accuracy against the fp32 export."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actions.errors import BadInput
from deploy.inference import ARTIFACT_FILE, INFO_FILE, MODEL_FILE, ModelInfo

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
    """Everything in an exported directory except the graph and its records (tokenizer files)."""
    for path in Path(src_dir).iterdir():
        if path.is_file() and path.name not in (MODEL_FILE, INFO_FILE, ARTIFACT_FILE):
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
        )
    finally:
        logging.getLogger().setLevel(quiet)
    copy_companions(src_dir, out_dir)
    ModelInfo(info.task, info.max_length, "int8", info.labels).write(out_dir)
    return QuantizeReport(
        fp32_bytes=(src_dir / MODEL_FILE).stat().st_size,
        int8_bytes=(out_dir / MODEL_FILE).stat().st_size,
        op_types=ops,
    )


def keep_fp32(src_dir: Path, out_dir: Path, reason: str) -> None:
    """The fallback: ship the fp32 export unchanged, with the reason beside it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src_dir / MODEL_FILE, out_dir / MODEL_FILE)
    shutil.copy2(src_dir / INFO_FILE, out_dir / INFO_FILE)
    copy_companions(src_dir, out_dir)
    (out_dir / "quantize_fallback.json").write_text(json.dumps({"reason": reason}) + "\n")


def info_dict(report: QuantizeReport) -> dict[str, Any]:
    return {"fp32_bytes": report.fp32_bytes, "int8_bytes": report.int8_bytes,
            "size_ratio": round(report.size_ratio, 4), "op_types": list(report.op_types)}
