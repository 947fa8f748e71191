"""PyTorch side of "one way to run a model": load a save_pretrained directory (sums checked),
pick the device and threads, and score texts exactly as deploy.text_scoring does for ONNX."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from actions.errors import BadInput
from deploy.inference import load_onnx
from deploy.model_artifact import MODEL_FILE, verify_artifact
from deploy.text_scoring import encode_lm, encode_lm_pair, pad_id, pad_right, token_nll
from lifeguard.tasks import CAUSAL_LM, SEQUENCE_CLASSIFICATION

SEQ_CLS = SEQUENCE_CLASSIFICATION  # the names the steps have always used


def set_threads(threads: int | None) -> int:
    """Give torch the cores this process was given (never more than it really has)."""
    import torch

    available = max(1, len(os.sched_getaffinity(0)))
    n = min(threads or available, available)
    torch.set_num_threads(n)
    return n


def resolve_device(device: str) -> str:
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise BadInput("device=cuda asked but torch sees no CUDA device")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def task_of(config: Any) -> str:
    arch = (getattr(config, "architectures", None) or [""])[0]
    if arch.endswith("ForSequenceClassification"):
        return SEQ_CLS
    if arch.endswith(("ForCausalLM", "LMHeadModel")):
        return CAUSAL_LM
    raise BadInput(f"unsupported architecture {arch!r}: need a classifier or a causal LM")


def check_artifact(model_dir: Path) -> None:
    """Refuse a directory whose files do not match its artifact record (IntegrityError)."""
    verify_artifact(Path(model_dir))


@dataclass
class TorchModel:
    """A loaded transformers model with its tokenizer, scoring texts in eval mode."""

    model: Any
    tokenizer: Any
    task: str
    labels: tuple[str, ...]
    max_length: int
    device: str

    def logits_from_ids(self, input_ids: Any, attention_mask: Any) -> np.ndarray:
        import torch

        kwargs = {"input_ids": input_ids.to(self.device),
                  "attention_mask": attention_mask.to(self.device)}
        if self.task == CAUSAL_LM:
            kwargs["use_cache"] = False
        with torch.no_grad():
            out = self.model(**kwargs).logits
        return out.float().cpu().numpy()

    def logits(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        chunks = []
        for start in range(0, len(texts), batch_size):
            enc = self.tokenizer(
                list(texts[start : start + batch_size]), padding=True, truncation=True,
                max_length=self.max_length, return_tensors="pt",
            )
            chunks.append(self.logits_from_ids(enc["input_ids"], enc["attention_mask"]))
        if not chunks:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return np.concatenate(chunks)

    def nll(
        self, texts: Sequence[str], prompts: Sequence[str] | None = None, batch_size: int = 16
    ) -> np.ndarray:
        import torch

        out = []
        for start in range(0, len(texts), batch_size):
            rows: list[list[int]] = []
            starts: list[int] = []
            for k in range(start, min(start + batch_size, len(texts))):
                prompt = prompts[k] if prompts is not None else ""
                row, first = encode_lm_pair(self.tokenizer, prompt, texts[k], self.max_length)
                rows.append(row)
                starts.append(first)
            ids, mask, lengths = pad_right(rows, pad_id(self.tokenizer))
            logits = self.logits_from_ids(torch.from_numpy(ids), torch.from_numpy(mask))
            out.append(token_nll(logits, ids, lengths, starts))
        return np.concatenate(out) if out else np.zeros(0)


    def greedy_ids(self, row: Sequence[int], max_new_tokens: int) -> list[int]:
        """Greedy new tokens after ``row`` (ids, BOS included) on transformers' own cache,
        ending at EOS, ``max_new_tokens`` or the context limit."""
        import torch

        eos = self.tokenizer.eos_token_id
        ids = torch.tensor([list(row)], device=self.device)
        past: Any = None
        out: list[int] = []
        with torch.no_grad():
            while len(out) < max_new_tokens and len(row) + len(out) < self.max_length:
                mask = torch.ones(1, len(row) + len(out), dtype=torch.long, device=self.device)
                res = self.model(input_ids=ids, attention_mask=mask, cache=past,
                                 use_cache=True)
                past = res.cache
                token = int(res.logits[0, -1].argmax())
                if token == eos:
                    break
                out.append(token)
                ids = torch.tensor([[token]], device=self.device)
        return out

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 16) -> list[str]:
        """Greedy continuations, prompts encoded as deploy.inference's OnnxCausalLM does, in
        one left-padded batch on transformers' cache (positions count real tokens only)."""
        import torch

        rows = [encode_lm(self.tokenizer, p, 10**9)[-(self.max_length - 1):] for p in prompts]
        if not rows:
            return []
        width, pad = max(len(r) for r in rows), pad_id(self.tokenizer)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows],
                            device=self.device)
        out: list[list[int]] = [[] for _ in rows]
        done = [False] * len(rows)
        past: Any = None
        new = ids
        with torch.no_grad():
            for _ in range(max_new_tokens):
                positions = (mask.cumsum(1) - 1).clamp(min=0)[:, -new.shape[1]:]
                res = self.model(input_ids=new, attention_mask=mask, position_ids=positions,
                                 cache=past, use_cache=True)
                past = res.cache
                tokens = res.logits[:, -1].float().argmax(-1).tolist()
                for i, token in enumerate(tokens):
                    if done[i]:
                        continue
                    if (token == self.tokenizer.eos_token_id
                            or len(rows[i]) + len(out[i]) >= self.max_length):
                        done[i] = True
                    else:
                        out[i].append(int(token))
                if all(done):
                    break
                keep = torch.tensor([not d for d in done], device=self.device)
                new = torch.where(keep, torch.tensor(tokens, device=self.device),
                                  torch.full_like(keep, pad, dtype=torch.long))[:, None]
                mask = torch.cat([mask, keep.long()[:, None]], dim=1)
        return [self.tokenizer.decode(t, skip_special_tokens=True) for t in out]


def load_torch_model(
    model_dir: Path, device: str = "auto", threads: int | None = None, train: bool = False
) -> TorchModel:
    """Load a save_pretrained directory (safetensors only; sums checked when recorded)."""
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise BadInput(f"{model_dir}: no config.json (not a save_pretrained directory)")
    check_artifact(model_dir)
    set_threads(threads)
    dev = resolve_device(device)
    config = AutoConfig.from_pretrained(str(model_dir))
    task = task_of(config)
    cls = AutoModelForSequenceClassification if task == SEQ_CLS else AutoModelForCausalLM
    # use_safetensors: never unpickle weights (no pickle from untrusted places)
    model: Any = cls.from_pretrained(str(model_dir), use_safetensors=True, dtype="float32")
    model = model.to(dev)
    model.train(train)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    labels: tuple[str, ...] = ()
    if task == SEQ_CLS:
        labels = tuple(config.id2label[i] for i in range(config.num_labels))
    limit = int(getattr(config, "max_position_embeddings", None)
                or getattr(config, "n_positions", None) or 512)
    tok_limit = int(tokenizer.model_max_length)
    return TorchModel(model, tokenizer, task, labels, min(limit, tok_limit), dev)


class Scorer(Protocol):
    """What the gate needs from a model, whatever runs it."""

    def logits(self, texts: Sequence[str]) -> np.ndarray: ...

    def nll(self, texts: Sequence[str], prompts: Sequence[str] | None = None) -> np.ndarray: ...

    def generate(self, prompts: Sequence[str], max_new_tokens: int = 16) -> list[str]: ...


@dataclass
class LoadedModel:
    scorer: Scorer
    task: str
    labels: tuple[str, ...]
    runtime: str  # "torch" or "onnx"


def load_any(model_dir: Path, device: str = "auto", threads: int | None = None) -> LoadedModel:
    """A save_pretrained directory runs in PyTorch, an exported one in onnxruntime."""
    model_dir = Path(model_dir)
    if (model_dir / MODEL_FILE).is_file():
        check_artifact(model_dir)
        onnx_device = "cuda" if device == "cuda" else ("cpu" if device == "cpu" else "auto")
        try:
            model = load_onnx(model_dir, onnx_device, threads)  # type: ignore[arg-type]
        except (OSError, KeyError, ValueError) as exc:
            raise BadInput(f"{model_dir}: cannot load exported model ({exc})") from exc
        labels = model.info.labels
        return LoadedModel(model, model.info.task, labels, "onnx")  # type: ignore[arg-type]
    tm = load_torch_model(model_dir, device, threads)
    return LoadedModel(tm, tm.task, tm.labels, "torch")
