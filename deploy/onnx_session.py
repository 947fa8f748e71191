"""onnxruntime sessions and tokenizers for an exported model: CPU or CUDA (checked to be really
active), the threads this process may use, and both built from verified bytes."""

from __future__ import annotations

import ctypes
import functools
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import onnxruntime as ort

from deploy.model_artifact import DATA_FILE, MODEL_FILE

Device = Literal["auto", "cpu", "cuda"]

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"


@functools.cache
def cuda_usable() -> bool:
    """Whether onnxruntime's CUDA provider can really load here.

    onnxruntime-gpu lists CUDA as available even when the CUDA libraries are missing, then falls
    back to CPU with an error in the log; loading the provider library ourselves is a quiet probe.
    """
    if _CUDA not in ort.get_available_providers():
        return False
    lib = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    try:
        ctypes.CDLL("libcuda.so.1")
        ctypes.CDLL(str(lib))
    except OSError:
        return False
    return True


def default_threads() -> int:
    """The cores this process may really use (affinity, not the machine's count)."""
    return max(1, len(os.sched_getaffinity(0)))


def create_session(
    model: Path | str | bytes, device: Device = "auto", threads: int | None = None
) -> ort.InferenceSession:
    """An onnxruntime session; CUDA only when asked (or auto) and really active. ``model`` is
    a path or the graph's bytes (what a verified load passes: ORT never opens a file then).

    ``device="cuda"`` raises RuntimeError when the session did not get the CUDA provider,
    because onnxruntime would otherwise run on CPU without saying so.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    want_cuda = device == "cuda" or (device == "auto" and cuda_usable())
    providers = [_CUDA, _CPU] if want_cuda else [_CPU]
    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, options, providers=providers)
    if device == "cuda" and _CUDA not in session.get_providers():
        where = "the model's bytes" if isinstance(model, bytes) else model
        raise RuntimeError(f"CUDA provider not active for {where}: {session.get_providers()}")
    return session


def load_tokenizer(model_dir: Path) -> Any:
    # Imported here: transformers is heavy and only needed once per loaded model.
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


def tokenizer_from_bytes(files: Mapping[str, bytes]) -> Any:
    """The tokenizer from verified bytes: transformers reads only directories, so its files
    (everything but the graph) are written to a private temporary one and read back from it."""
    with tempfile.TemporaryDirectory(prefix="lifeguard-tokenizer-") as tmp:  # mode 0700
        for rel, data in files.items():
            if rel == MODEL_FILE or "/" in rel:
                continue
            (Path(tmp) / rel).write_bytes(data)
        return load_tokenizer(Path(tmp))


def session_from_bytes(files: Mapping[str, bytes], device: Device = "auto",
                       threads: int | None = None) -> ort.InferenceSession:
    """A session from verified bytes. A graph whose weights live in ``DATA_FILE`` (over 2 GB)
    cannot load from memory alone: both files' verified bytes go to a private temporary
    folder that ORT reads once, so no file is read again after its check."""
    if DATA_FILE not in files:
        return create_session(files[MODEL_FILE], device, threads)
    with tempfile.TemporaryDirectory(prefix="lifeguard-onnx-") as tmp:
        for name in (MODEL_FILE, DATA_FILE):
            (Path(tmp) / name).write_bytes(files[name])
        return create_session(Path(tmp) / MODEL_FILE, device, threads)
