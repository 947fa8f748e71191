"""One way to run an exported model directory with onnxruntime, shared by gate, bench, replica:
a text classifier and a causal LM (greedy or sampled generation, per-text NLL), opened by
``load_onnx`` as its ``model_info.json`` task says.

The directory's contract (files, ``model_info.json``, ``artifact.json`` sums) is
deploy.model_artifact; sessions and tokenizers are built by deploy.onnx_session from the bytes
read and checked once, so no file is opened again after its check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from deploy.model_artifact import INFO_FILE, MODEL_FILE, ModelInfo, read_artifact
from deploy.onnx_session import Device, session_from_bytes, tokenizer_from_bytes
from deploy.text_scoring import encode_lm, encode_lm_pair, pad_id, pad_right, softmax, token_nll
from lifeguard.errors import IntegrityError


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
