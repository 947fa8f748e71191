"""One way to run an exported model directory with onnxruntime (the model artifact contract):
sessions on CPU or CUDA, a text classifier and a greedy causal LM, shared by gate, bench, replica.

An exported directory holds ``model.onnx`` (inputs ``input_ids``/``attention_mask`` int64 with
dynamic batch and sequence axes, output ``logits``; a causal LM's graph also takes
``position_ids`` and its KV cache, see deploy.generation), maybe ``model.onnx.data`` (external
weights of a model over 2 GB), the tokenizer, ``model_info.json`` and,
when an action step wrote it, ``artifact.json`` whose sha256 sums are checked before load.
Files are read once: the sums are checked on the bytes read, and the session, the tokenizer
and ``model_info.json`` are built from those same bytes (no file is opened again after it).
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

from deploy.integrity import read_verified, verify_dir
from lifeguard.errors import IntegrityError
from lifeguard.tasks import TASKS

Device = Literal["auto", "cpu", "cuda"]
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"  # external weights, beside the graph, when over 2 GB
INFO_FILE = "model_info.json"
ARTIFACT_FILE = "artifact.json"
PRECISIONS = ("fp32", "int8")

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"


@dataclass(frozen=True)
class ModelInfo:
    """``model_info.json``: what the graph computes and how its inputs are made."""

    task: str
    max_length: int
    precision: str
    labels: tuple[str, ...] = ()
    kv_cache: tuple[int, int, int] | None = None  # causal LMs: (layers, kv heads, head dim)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")
        if self.task == "sequence-classification" and len(self.labels) < 2:
            raise ValueError("a classifier needs at least two labels")

    @classmethod
    def read(cls, model_dir: Path) -> ModelInfo:
        return cls.parse((Path(model_dir) / INFO_FILE).read_bytes())

    @classmethod
    def parse(cls, data: bytes) -> ModelInfo:
        raw = json.loads(data)
        return cls(
            task=raw["task"],
            max_length=int(raw["max_length"]),
            precision=raw["precision"],
            labels=tuple(raw.get("labels", ())),
            kv_cache=(None if raw.get("kv_cache") is None else (
                int(raw["kv_cache"]["layers"]), int(raw["kv_cache"]["heads"]),
                int(raw["kv_cache"]["head_dim"]))),
        )

    def write(self, model_dir: Path) -> None:
        raw: dict[str, Any] = {
            "task": self.task,
            "max_length": self.max_length,
            "precision": self.precision,
        }
        if self.labels:
            raw["labels"] = list(self.labels)
        if self.kv_cache is not None:
            raw["kv_cache"] = dict(zip(("layers", "heads", "head_dim"), self.kv_cache,
                                       strict=True))
        (Path(model_dir) / INFO_FILE).write_text(json.dumps(raw, indent=2) + "\n")


def verify_artifact(model_dir: Path) -> None:
    """Check the sums in ``artifact.json`` when there is one; raise IntegrityError on mismatch."""
    record = Path(model_dir) / ARTIFACT_FILE
    if not record.is_file():
        return
    try:
        files = json.loads(record.read_text())["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"{record}: unreadable artifact record ({exc})") from exc
    verify_dir(Path(model_dir), files)


def read_artifact(model_dir: Path) -> dict[str, bytes]:
    """Every file of an exported directory, read once: checked against ``artifact.json``'s
    sums as read when there is one (every other file is then refused), else taken as is."""
    model_dir = Path(model_dir)
    record = model_dir / ARTIFACT_FILE
    if not record.is_file():
        return {p.relative_to(model_dir).as_posix(): p.read_bytes()
                for p in sorted(model_dir.rglob("*")) if p.is_file()}
    raw = record.read_bytes()
    try:
        sums = json.loads(raw)["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"{record}: unreadable artifact record ({exc})") from exc
    return {**read_verified(model_dir, sums), ARTIFACT_FILE: raw}


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


class _OnnxModel:
    """Built from the directory's bytes: ``files`` when the caller read and checked them (a
    repository version), else read here once and checked against ``artifact.json``."""

    def __init__(self, model_dir: Path, device: Device = "auto", threads: int | None = None,
                 files: Mapping[str, bytes] | None = None):
        self.model_dir = Path(model_dir)
        if files is None:
            files = read_artifact(self.model_dir)
        for name in (INFO_FILE, MODEL_FILE):
            if name not in files:
                raise IntegrityError(f"{self.model_dir}: {name} is missing")
        self.info = ModelInfo.parse(files[INFO_FILE])
        self.session = session_from_bytes(files, device, threads)
        self.tokenizer = tokenizer_from_bytes(files)
        self._input_names = {i.name for i in self.session.get_inputs()}

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    @property
    def max_length(self) -> int:
        return self.info.max_length

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": input_ids.astype(np.int64)}
        if "attention_mask" in self._input_names:
            feeds["attention_mask"] = attention_mask.astype(np.int64)
        return np.asarray(self.session.run(["logits"], feeds)[0])


class OnnxClassifier(_OnnxModel):
    """A sequence classifier: texts in, logits or (label, probability) out."""

    @classmethod
    def from_dir(
        cls, model_dir: Path | str, device: Device = "auto", threads: int | None = None,
        files: Mapping[str, bytes] | None = None,
    ) -> OnnxClassifier:
        model = cls(Path(model_dir), device, threads, files)
        if model.info.task != "sequence-classification":
            raise ValueError(f"{model_dir} holds a {model.info.task} model, not a classifier")
        return model

    @property
    def labels(self) -> tuple[str, ...]:
        return self.info.labels

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length,
            return_tensors="np",
        )
        return enc["input_ids"], enc["attention_mask"]

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return self.run(*self.encode(texts))

    def predict(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        logits = self.logits(texts)
        probs = softmax(logits)
        best = probs.argmax(axis=-1)
        return [(self.labels[i], float(p[i])) for i, p in zip(best, probs, strict=True)]


class OnnxCausalLM(_OnnxModel):
    """A causal LM: greedy or sampled generation on the graph's KV cache (deploy.generation)
    and per-text negative log-likelihood. Graphs without past inputs run without a cache."""

    def __init__(self, model_dir: Path, device: Device = "auto", threads: int | None = None,
                 files: Mapping[str, bytes] | None = None):
        super().__init__(model_dir, device, threads, files)
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.past_names = sorted((n for n in inputs if n.startswith("past_key_values.")),
                                 key=_layer_order)
        self.present_names = [n.replace("past_key_values.", "present.")
                              for n in self.past_names]
        # [batch, heads, past, head_dim]: heads and head_dim are fixed in the graph
        self._kv_dims: tuple[int, int] | None = None
        if self.past_names:
            shape = inputs[self.past_names[0]].shape
            self._kv_dims = (int(shape[1]), int(shape[3]))

    @classmethod
    def from_dir(
        cls, model_dir: Path | str, device: Device = "auto", threads: int | None = None,
        files: Mapping[str, bytes] | None = None,
    ) -> OnnxCausalLM:
        model = cls(Path(model_dir), device, threads, files)
        if model.info.task != "causal-lm":
            raise ValueError(f"{model_dir} holds a {model.info.task} model, not a causal LM")
        return model

    @property
    def has_cache(self) -> bool:
        return bool(self.past_names)

    @property
    def pad_token_id(self) -> int:
        return pad_id(self.tokenizer)

    def empty_past(self, batch: int) -> list[np.ndarray]:
        assert self._kv_dims is not None, "a graph without a KV cache has no past"
        heads, dim = self._kv_dims
        return [np.zeros((batch, heads, 0, dim), dtype=np.float32) for _ in self.past_names]

    def step(self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray,
             past: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One forward pass on the cache: (logits of the new tokens, the grown cache).
        ``attention_mask`` covers the past and the new tokens."""
        feeds = {"input_ids": input_ids.astype(np.int64),
                 "attention_mask": attention_mask.astype(np.int64),
                 "position_ids": position_ids.astype(np.int64),
                 **dict(zip(self.past_names, past, strict=True))}
        out = self.session.run(["logits", *self.present_names], feeds)
        return np.asarray(out[0]), [np.asarray(o) for o in out[1:]]

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Logits of whole right-padded sequences (an empty cache when the graph has one)."""
        if not self.has_cache:
            return super().run(input_ids, attention_mask)
        positions = np.broadcast_to(np.arange(input_ids.shape[1], dtype=np.int64),
                                    input_ids.shape)
        return self.step(input_ids, attention_mask, positions,
                         self.empty_past(input_ids.shape[0]))[0]

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 16,
                 use_cache: bool = True) -> list[str]:
        """Greedy continuations of ``prompts`` (batched, one step per new token)."""
        from deploy.generation import greedy_batch

        if max_new_tokens < 0:
            raise ValueError("max_new_tokens must be >= 0")
        rows = [self.prompt_ids(p) for p in prompts]
        out = greedy_batch(self, rows, max_new_tokens, use_cache)
        return [self.tokenizer.decode(tokens, skip_special_tokens=True) for tokens in out]

    def prompt_ids(self, prompt: str) -> list[int]:
        """BOS + the prompt's ids, keeping its end (where a chat asks for the answer) and room
        for at least one new token."""
        row = encode_lm(self.tokenizer, prompt, 10**9)
        return row[-(self.max_length - 1):]

    def nll(self, texts: Sequence[str], prompts: Sequence[str] | None = None) -> np.ndarray:
        """Mean negative log-likelihood per text; with ``prompts``, of the text given its prompt
        (prompt tokens are context, not scored)."""
        if prompts is not None and len(prompts) != len(texts):
            raise ValueError("prompts and texts must have the same length")
        rows: list[list[int]] = []
        starts: list[int] = []
        for k, text in enumerate(texts):
            row, start = encode_lm_pair(
                self.tokenizer, prompts[k] if prompts is not None else "", text, self.max_length
            )
            rows.append(row)
            starts.append(start)
        if not rows:
            return np.zeros(0, dtype=np.float64)
        ids, mask, lengths = pad_right(rows, pad_id(self.tokenizer))
        logits = self.run(ids, mask)
        return token_nll(logits, ids, lengths, starts)


def _layer_order(name: str) -> tuple[int, str]:
    _, layer, kind = name.split(".")
    return int(layer), kind


def load_onnx(model_dir: Path | str, device: Device = "auto", threads: int | None = None,
              files: Mapping[str, bytes] | None = None) -> OnnxClassifier | OnnxCausalLM:
    """Open an exported directory as the right model for its ``model_info.json`` task, from
    ``files`` (bytes already checked, e.g. ``ModelRepository.read_verified``) or from the
    directory's files read and checked once here."""
    if files is None:
        files = read_artifact(Path(model_dir))  # before model_info.json is trusted to dispatch
    if INFO_FILE not in files:
        raise IntegrityError(f"{model_dir}: {INFO_FILE} is missing")
    task = ModelInfo.parse(files[INFO_FILE]).task
    if task == "sequence-classification":
        return OnnxClassifier.from_dir(model_dir, device, threads, files)
    return OnnxCausalLM.from_dir(model_dir, device, threads, files)


# --- shared with the PyTorch helpers in actions, so both runtimes score text the same way ---


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def pad_id(tokenizer: Any) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return int(tokenizer.eos_token_id or 0)


def encode_lm(tokenizer: Any, text: str, max_length: int) -> list[int]:
    """Token ids of ``text`` after a BOS token (so a one-token text still has a prediction)."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    prefix = [int(bos)] if bos is not None else []
    return (prefix + ids)[:max_length]


def encode_lm_pair(
    tokenizer: Any, prompt: str, target: str, max_length: int, eos: bool = False
) -> tuple[list[int], int]:
    """ids of BOS + prompt + target (+ EOS), and the index of the first target token.

    Truncation keeps the end of the prompt, so the target is scored with its nearest context.
    """
    head = encode_lm(tokenizer, prompt, 10**9)
    tail = list(tokenizer(target, add_special_tokens=False)["input_ids"])
    if eos and tokenizer.eos_token_id is not None:
        tail.append(int(tokenizer.eos_token_id))
    tail = tail[: max_length - 1]
    head = head[-(max_length - len(tail)) :]
    start = max(1, len(head))
    return head + tail, start


def pad_right(rows: Sequence[Sequence[int]], pad: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    lengths = [len(r) for r in rows]
    width = max(lengths)
    ids = np.full((len(rows), width), pad, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return ids, mask, lengths


def token_nll(
    logits: np.ndarray, ids: np.ndarray, lengths: Sequence[int], starts: Sequence[int]
) -> np.ndarray:
    """Mean NLL of tokens ``starts[i]..lengths[i]-1`` of each row, each predicted from the left."""
    logits = logits.astype(np.float64)
    logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    out = np.zeros(len(lengths), dtype=np.float64)
    for i, (n, s) in enumerate(zip(lengths, starts, strict=True)):
        pos = np.arange(max(1, s), n)
        if len(pos) == 0:
            out[i] = float("nan")
            continue
        picked = logits[i, pos - 1, ids[i, pos]]
        out[i] = float(np.mean(logz[i, pos - 1] - picked))
    return out
