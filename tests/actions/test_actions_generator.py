"""A generator's training and gate in pieces: LoRA by default, a resumed run makes the weights
of an uninterrupted one, chat prompts go through the template, the gate's rule on perplexity
and ROUGE-L, and weights past the external-data threshold still load and generate the same."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from actions.evaluate import GeneratorScore, decide_generator
from actions.fine_tune import method_for
from actions.prompts import render_prompt
from actions.settings import ActionPolicy, TrainConfig
from actions.snapshot import Row
from harness.tiny_models import cached_causal_lm, cached_onnx_causal_lm
from lifeguard.scores import reference_scores


def test_lora_is_the_default_for_a_causal_lm_only() -> None:
    assert TrainConfig().method == "auto"
    assert method_for("causal-lm", "auto") == "lora"
    assert method_for("sequence-classification", "auto") == "full"
    assert method_for("causal-lm", "full") == "full"


class _Interrupted(Exception):
    pass


def test_a_resumed_run_makes_the_weights_of_an_uninterrupted_one(tmp_path: Path) -> None:
    import torch

    from actions.torch_models import load_torch_model
    from actions.training import train

    examples = [("the battery", f" was {w} today") for w in ("great", "dead", "fine", "bad")] * 4
    cfg = TrainConfig(method="full", epochs=2, max_steps=6, batch_size=4, learning_rate=1e-2,
                      max_length=24, checkpoint_every=2, seed=3)

    def weights(checkpoints: Path | None, stop_at: int | None) -> dict[str, Any]:
        tm = load_torch_model(cached_causal_lm(), "cpu", 1)

        def on_step(done: int, _total: int, _loss: float) -> None:
            if done == stop_at:
                raise _Interrupted  # as a kill after the checkpoint of step 4

        try:
            outcome = train(tm.model, tm.tokenizer, tm.task, examples, cfg, "cpu", on_step,
                            checkpoint_dir=checkpoints)
        except _Interrupted:
            return {}
        assert outcome.steps == 6
        return {k: v.clone() for k, v in tm.model.state_dict().items()}

    straight = weights(None, None)
    assert weights(tmp_path, stop_at=5) == {}  # died after step 5, checkpoint at 4
    resumed = weights(tmp_path, None)
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_chat_rows_are_rendered_by_the_template() -> None:
    from deploy.onnx_session import load_tokenizer

    tokenizer = load_tokenizer(cached_causal_lm())
    row = cast(Row, SimpleNamespace(text="user: my router blinks",
                                    messages=(("system", "be brief"),
                                              ("user", "my router blinks"))))
    # no template: the replica's plain rendering, ending where the answer starts
    assert render_prompt(tokenizer, row) == "system: be brief\nuser: my router blinks\nassistant:"
    tokenizer.chat_template = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}"
                               "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
    assert render_prompt(tokenizer, row) == (
        "<|system|>be brief<|user|>my router blinks<|assistant|>")
    plain = cast(Row, SimpleNamespace(text="the battery", messages=None))
    assert render_prompt(tokenizer, plain) == "the battery"


def _score(ppl: float, rouge: float) -> GeneratorScore:
    return GeneratorScore(ppl, rouge, 20, "references")


def test_generator_gate_rule() -> None:
    policy = ActionPolicy(perplexity_margin=0.05, score_margin=0.02, score_floor=0.1)
    champion = _score(20.0, 0.30)
    better = decide_generator(_score(15.0, 0.35), champion, policy)
    assert better.passed and better.candidate_rouge_l == 0.35 and better.champion == 20.0
    # lower perplexity, a ROUGE-L within the margin: passes
    assert decide_generator(_score(18.0, 0.29), champion, policy).passed
    # worse beyond a margin on either side fails, whatever the other says
    assert not decide_generator(_score(10.0, 0.25), champion, policy).passed
    assert not decide_generator(_score(21.5, 0.50), champion, policy).passed
    # equal is not worth a rollout; the floor holds without a champion too
    assert not decide_generator(_score(20.0, 0.30), champion, policy).passed
    assert not decide_generator(_score(5.0, 0.05), None, policy).passed
    assert decide_generator(_score(50.0, 0.2), None, policy).passed


def test_rouge_l_scores_word_overlap_in_order() -> None:
    """The gate's scorer is the daemon's (lifeguard.scores): word overlap in order."""
    def rouge_l(answer: str, reference: str) -> float:
        return float(reference_scores([answer], [reference], "rougeL")[0])

    assert rouge_l("hold the reset pin", "Hold the reset pin.") == 1.0
    assert rouge_l("restart it", "hold the reset pin") == 0.0
    assert 0 < rouge_l("hold the pin", "hold the reset pin") < 1


def test_external_data_keeps_the_model_whole(tmp_path: Path) -> None:
    import onnx

    from actions.export import save_onnx
    from deploy.inference import OnnxCausalLM
    from deploy.model_artifact import DATA_FILE, MODEL_FILE

    source = cached_onnx_causal_lm()
    out = tmp_path / "external"
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("artifact.json", MODEL_FILE))
    assert save_onnx(onnx.load(str(source / MODEL_FILE)), out / MODEL_FILE, external_bytes=1000)
    moved_bytes = (out / DATA_FILE).stat().st_size
    assert moved_bytes > 100_000  # the weights left the graph's file
    assert (out / MODEL_FILE).stat().st_size + moved_bytes // 2 < (
        source / MODEL_FILE).stat().st_size
    prompts = ["the battery", "my"]
    moved = OnnxCausalLM.from_dir(out, "cpu", 1).generate(prompts, 6)
    assert moved == OnnxCausalLM.from_dir(source, "cpu", 1).generate(prompts, 6)
    with pytest.raises(AssertionError):  # under the threshold: one file, as before
        assert save_onnx(onnx.load(str(source / MODEL_FILE)), tmp_path / MODEL_FILE)
