"""A causal LM's ONNX graph with its KV cache (``past_key_values`` in, ``present`` out, so each
new token costs one step), and its parity on generated tokens: greedy continuations of a set of
prompts must be the very tokens PyTorch generates, not only logits within a bound."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from actions.torch_models import TorchModel

PROMPTS = ("the", "the battery was", "i think the service", "my order arrived and",
           "overall it was really")


def io_names(layers: int) -> tuple[list[str], list[str]]:
    """The graph's input and output names for a model with ``layers`` transformer blocks."""
    kinds = ("key", "value")
    past = [f"past_key_values.{i}.{k}" for i in range(layers) for k in kinds]
    present = [f"present.{i}.{k}" for i in range(layers) for k in kinds]
    return ["input_ids", "attention_mask", "position_ids", *past], ["logits", *present]


def kv_shape(config: Any) -> tuple[int, int, int]:
    """(layers, kv heads, head dim) from a transformers config."""
    layers = int(getattr(config, "num_hidden_layers", None) or config.n_layer)
    heads = int(getattr(config, "num_attention_heads", None) or config.n_head)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    hidden = int(getattr(config, "hidden_size", None) or config.n_embd)
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    return layers, kv_heads, head_dim


def wrap(model: Any) -> Any:
    """A module with flat tensors in and out: the cache is rebuilt as transformers' DynamicCache
    inside, so the exporter sees plain inputs and outputs."""
    import torch
    from transformers.cache_utils import DynamicCache

    layers = kv_shape(model.config)[0]

    class WithCache(torch.nn.Module):
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, position_ids: Any,
                    *past: Any) -> tuple[Any, ...]:
            cache = DynamicCache(config=self.inner.config)
            for i in range(layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask,
                             position_ids=position_ids, cache=cache, use_cache=True)
            flat: list[Any] = []
            for layer in out.cache.layers[:layers]:
                flat += [layer.keys, layer.values]
            return (out.logits, *flat)

    return WithCache(model)


def example_inputs(config: Any, vocab_size: int) -> tuple[Any, ...]:
    """Trace inputs: a past of 3 tokens and 2 new ones (no size is 0 or 1, which the exporter
    would specialise on; an empty past still works at run time)."""
    import torch

    layers, heads, dim = kv_shape(config)
    gen = torch.Generator().manual_seed(0)
    batch, new, past = 2, 2, 3
    ids = torch.randint(min(5, vocab_size - 1), vocab_size, (batch, new), generator=gen)
    mask = torch.ones(batch, past + new, dtype=torch.long)
    positions = torch.arange(past, past + new).expand(batch, new).contiguous()
    cache = [torch.randn(batch, heads, past, dim, generator=gen) for _ in range(2 * layers)]
    return (ids, mask, positions, *cache)


def dynamic_shapes(layers: int) -> dict[str, Any]:
    import torch

    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    total, past = torch.export.Dim("total"), torch.export.Dim("past")
    return {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: total},
            "position_ids": {0: batch, 1: seq},
            "past": tuple({0: batch, 2: past} for _ in range(2 * layers))}


@dataclass(frozen=True)
class TokenParity:
    """Greedy continuations compared token by token on ``prompts`` prompts."""

    prompts: int
    identical: int
    new_tokens: int
    first_mismatch: dict[str, Any] | None

    @property
    def ok(self) -> bool:
        return self.identical == self.prompts


def token_parity(tm: TorchModel, onnx_model: Any, new_tokens: int = 16,
                 prompts: Sequence[str] = PROMPTS) -> TokenParity:
    """PyTorch's greedy tokens (its own cache) against the ONNX graph's (deploy.generation,
    batched, on the exported cache) for each prompt."""
    from deploy.generation import greedy_batch

    rows = [onnx_model.prompt_ids(p) for p in prompts]
    got = greedy_batch(onnx_model, rows, new_tokens)
    identical, mismatch = 0, None
    for prompt, row, onnx_tokens in zip(prompts, rows, got, strict=True):
        ref = tm.greedy_ids(row, new_tokens)
        if ref == onnx_tokens:
            identical += 1
        elif mismatch is None:
            mismatch = {"prompt": prompt, "torch": ref, "onnx": onnx_tokens}
    return TokenParity(len(rows), identical, new_tokens, mismatch)
