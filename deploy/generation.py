"""Generation with the exported graph's KV cache: the prompt runs once (prefill), then each new
token costs one ONNX step on the cache; sampling parameters (temperature, top_p, seeded).

A causal-LM graph (actions.export) takes ``input_ids``, ``attention_mask`` (past + new tokens),
``position_ids`` and ``past_key_values.{i}.key|value`` ([batch, heads, past, head_dim]); it
returns ``logits`` and ``present.{i}.key|value``. A graph without past inputs (older exports)
is run on the whole sequence at every step, which is also the ``use_cache=False`` baseline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from deploy.inference import OnnxCausalLM

DEFAULT_MAX_TOKENS = 16


def render_chat(tokenizer: Any, messages: Sequence[Mapping[str, Any]]) -> str:
    """A chat as the model's prompt: the tokenizer's chat template when it has one; else
    ``role: content`` lines ending in ``assistant:`` (the tiny test models have no template).
    Serving and fine-tuning both render through here, so a model trains on what it serves."""
    if getattr(tokenizer, "chat_template", None):
        return str(tokenizer.apply_chat_template([dict(m) for m in messages], tokenize=False,
                                                 add_generation_prompt=True))
    lines = [f"{m['role']}: {m.get('content') or ''}" for m in messages]
    return "\n".join([*lines, "assistant:"])


@dataclass(frozen=True)
class Sampling:
    """How one request picks its tokens: greedy when ``temperature`` is 0 (or absent), else
    softmax(logits / temperature) cut to the ``top_p`` nucleus, drawn from a seeded RNG."""

    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be a positive integer")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError("stop must be a string or a list of non-empty strings")

    @classmethod
    def from_params(cls, params: Mapping[str, Any],
                    default_max: int = DEFAULT_MAX_TOKENS) -> Sampling:
        """From a request's parameters (Triton's generate extension and OpenAI's names);
        ValueError naming the parameter at fault."""
        raw_max = params.get("max_tokens", params.get("max_completion_tokens",
                                                       params.get("max_new_tokens")))
        max_tokens = default_max if raw_max is None else raw_max
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
            raise ValueError("max_tokens must be a positive integer")
        stop = params.get("stop") or ()
        stop = (stop,) if isinstance(stop, str) else stop
        if not isinstance(stop, list | tuple):
            raise ValueError("stop must be a string or a list of non-empty strings")
        seed = params.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError("seed must be an integer")
        return cls(max_tokens=max_tokens, temperature=_number(params, "temperature", 0.0),
                   top_p=_number(params, "top_p", 1.0), stop=tuple(stop), seed=seed)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def pick(self, logits: np.ndarray, rng: np.random.Generator) -> int:
        """The next token from one row of logits."""
        if self.greedy:
            return int(logits.argmax())
        scaled = logits.astype(np.float64) / self.temperature
        probs = np.exp(scaled - scaled.max())
        probs /= probs.sum()
        if self.top_p < 1:
            order = np.argsort(-probs)
            cumulative = np.cumsum(probs[order])
            keep = order[: int(np.searchsorted(cumulative, self.top_p)) + 1]
            nucleus = np.zeros_like(probs)
            nucleus[keep] = probs[keep]
            probs = nucleus / nucleus.sum()
        return int(rng.choice(len(probs), p=probs))


def _number(params: Mapping[str, Any], name: str, default: float) -> float:
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    return float(value)


@dataclass
class Stream:
    """One request's decode, a token at a time: ``step()`` returns the next text piece ('' while
    a multi-byte character is incomplete) until ``finish_reason`` is "stop" or "length"."""

    model: OnnxCausalLM
    prompt_ids: list[int]
    sampling: Sampling = field(default_factory=Sampling)
    use_cache: bool = True
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    _past: list[np.ndarray] | None = None
    _rng: np.random.Generator | None = None

    @property
    def tokens_in(self) -> int:
        return len(self.prompt_ids)

    def step(self) -> str:
        """Run one model step (the whole prompt on the first call) and decode its token."""
        if self.finish_reason is not None:
            return ""
        row = self.prompt_ids + self.tokens
        if len(self.tokens) >= self.sampling.max_tokens or len(row) >= self.model.max_length:
            self.finish_reason = "length"
            return ""
        logits = self._logits(row)
        if self._rng is None:
            self._rng = np.random.default_rng(self.sampling.seed)
        token = self.sampling.pick(logits, self._rng)
        if token == self.model.tokenizer.eos_token_id:
            self.finish_reason = "stop"
            return ""
        self.tokens.append(token)
        text = self.model.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""  # half a multi-byte character: wait for the rest
        cut = min((i for i in (text.find(s) for s in self.sampling.stop) if i >= 0), default=-1)
        if cut >= 0:
            text, self.finish_reason = text[:cut], "stop"
        piece, self.text = text[len(self.text):], text
        return piece

    def run(self) -> str:
        while self.finish_reason is None:
            self.step()
        return self.text

    def run_tokens(self) -> list[int]:
        self.run()
        return list(self.tokens)

    def _logits(self, row: list[int]) -> np.ndarray:
        if not (self.use_cache and self.model.has_cache):
            ids = np.asarray([row], dtype=np.int64)
            return self.model.run(ids, np.ones_like(ids))[0, -1]
        if self._past is None:  # prefill: the whole prompt, an empty cache
            new, past = row, self.model.empty_past(1)
        else:
            new, past = row[-1:], self._past
        ids = np.asarray([new], dtype=np.int64)
        start = len(row) - len(new)
        positions = np.arange(start, len(row), dtype=np.int64)[None]
        logits, self._past = self.model.step(ids, np.ones((1, len(row)), np.int64), positions,
                                             past)
        return logits[0, -1]


def greedy_batch(model: OnnxCausalLM, rows: Sequence[Sequence[int]], max_new_tokens: int,
                 use_cache: bool = True) -> list[list[int]]:
    """Greedy continuations of several prompts together (left-padded; one step per new token
    with the cache), each ending at EOS, ``max_new_tokens`` or the context limit."""
    if not rows:
        return []
    if not (use_cache and model.has_cache):
        return [Stream(model, list(r), Sampling(max_new_tokens), use_cache=False).run_tokens()
                if max_new_tokens > 0 else [] for r in rows]
    pad = model.pad_token_id
    width = max(len(r) for r in rows)
    n = len(rows)
    ids = np.full((n, width), pad, dtype=np.int64)
    mask = np.zeros((n, width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = row
        mask[i, width - len(row):] = 1
    out: list[list[int]] = [[] for _ in rows]
    done = np.zeros(n, dtype=bool)
    past = model.empty_past(n)
    new = ids
    eos = model.tokenizer.eos_token_id
    for _ in range(max_new_tokens):
        positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)[:, -new.shape[1]:]
        logits, past = model.step(new, mask, positions, past)
        tokens = logits[:, -1].argmax(axis=-1)
        for i in range(n):
            if done[i]:
                continue
            if int(tokens[i]) == eos or len(rows[i]) + len(out[i]) >= model.max_length:
                done[i] = True
            else:
                out[i].append(int(tokens[i]))
        if done.all():
            break
        new = np.where(done, pad, tokens)[:, None].astype(np.int64)
        mask = np.concatenate([mask, (~done)[:, None].astype(np.int64)], axis=1)
    return out

