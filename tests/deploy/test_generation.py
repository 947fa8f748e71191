"""Decoding on the exported KV cache: the same tokens as re-running the whole sequence, batched
or streamed; sampling parameters checked and seeded."""

from __future__ import annotations

import numpy as np
import pytest

from deploy.generation import Sampling, Stream, greedy_batch
from deploy.inference import OnnxCausalLM
from harness.tiny_models import cached_onnx_causal_lm


@pytest.fixture(scope="module")
def lm() -> OnnxCausalLM:
    return OnnxCausalLM.from_dir(cached_onnx_causal_lm(), "cpu", 1)


def test_cache_and_no_cache_decode_the_same_tokens(lm: OnnxCausalLM) -> None:
    assert lm.has_cache
    rows = [lm.prompt_ids(p) for p in ("the", "the battery was", "i think my laptop")]
    cached = greedy_batch(lm, rows, 10)  # left-padded together, one step per token
    assert cached == greedy_batch(lm, rows, 10, use_cache=False)
    streamed = [Stream(lm, row, Sampling(max_tokens=10)).run_tokens() for row in rows]
    assert streamed == cached
    assert all(0 < len(t) <= 10 for t in cached)


def test_stream_finishes_with_length_or_stop(lm: OnnxCausalLM) -> None:
    stream = Stream(lm, lm.prompt_ids("the battery"), Sampling(max_tokens=3))
    text = stream.run()
    assert stream.finish_reason == ("length" if len(stream.tokens) == 3 else "stop")
    assert text == lm.tokenizer.decode(stream.tokens, skip_special_tokens=True)
    if len(text.strip()) > 1:
        stop = text.strip()[-1]
        cut = Stream(lm, lm.prompt_ids("the battery"), Sampling(max_tokens=3, stop=(stop,)))
        assert cut.run() == text[: text.index(stop)] and cut.finish_reason == "stop"


def test_sampling_params_are_checked_and_seeded() -> None:
    assert Sampling.from_params({}).greedy
    s = Sampling.from_params({"max_tokens": 4, "temperature": 0.7, "top_p": 0.9,
                              "stop": "\n", "seed": 3})
    assert (s.max_tokens, s.temperature, s.top_p, s.stop, s.seed) == (4, 0.7, 0.9, ("\n",), 3)
    for bad, name in (({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"),
                      ({"max_tokens": 0}, "max_tokens"), ({"max_tokens": "5"}, "max_tokens"),
                      ({"stop": [""]}, "stop"), ({"seed": 1.5}, "seed")):
        with pytest.raises(ValueError, match=name):
            Sampling.from_params(bad)
    logits = np.array([0.0, 3.0, 2.9, -5.0])
    draws = [Sampling(temperature=1.0).pick(logits, np.random.default_rng(s)) for s in range(40)]
    assert {1, 2} <= set(draws)  # temperature samples
    again = [Sampling(temperature=1.0).pick(logits, np.random.default_rng(s)) for s in range(40)]
    assert draws == again  # seeded
    nucleus = Sampling(temperature=1.0, top_p=0.3)
    assert {nucleus.pick(logits, np.random.default_rng(s)) for s in range(40)} == {1}
    assert Sampling().pick(logits, np.random.default_rng(0)) == 1  # greedy
