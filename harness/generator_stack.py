"""The daemon's config for a generator on the embedded stack (the support demo): a causal-lm
model judged on TTFT, truncation, mean rating and the reference score, retrained on its own
traffic by fine_tune -> evaluate -> export_onnx -> quantize -> deploy, canaried as a generator."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.processes import LoopSettings

# What triggers a retrain: answers scoring worse against the corrected references than in the
# reference window, or worse rated. Latency-type breaches alert, they do not retrain.
TRIGGER = {"any": [{"key": "quality.reference_score_vs_reference"},
                   {"key": "accuracy.mean_rating_vs_reference"}]}


def generator_config(config: dict[str, Any], s: LoopSettings) -> dict[str, Any]:
    """Turn the classifier stack's ``config`` into a generator's, in place."""
    model = config["models"][0]
    model["task"] = "causal-lm"
    model["detectors"] = {
        # Tolerances wide enough that a stationary run's noise never retrains (a shift to
        # the new product costs far more than these: its answers score ~0.2, not ~0.9).
        "accuracy": {"min_labels": s.min_labels, "tolerance": 0.15},
        "quality": {"scorer": "rougeL", "min_references": s.min_labels, "tolerance": 0.1},
        "drift": {"min_samples": min(100, s.reference)},
        "generation": {"ttft_p95_ms": 5000.0, "tpot_p95_ms": 1000.0,
                       "truncation_rate_max": 0.5, "empty_output_rate_max": 0.2},
        "latency": {"p95_ms": None},
    }
    model["policy"]["trigger"] = TRIGGER
    steps = config["pipelines"]["retrain"]["steps"]
    for step in steps:
        if step["name"] == "fine_tune":
            # full fine-tuning: the demo's model is small enough, and learns the new product's
            # answers in a few hundred steps; LoRA (r=8) on so small a model reached about half
            # the ground-truth score in twice the steps.
            step["params"] = {"method": "full", "epochs": s.train_epochs,
                              "max_length": s.train_max_length, "batch_size": 16,
                              "learning_rate": s.train_lr, "holdout_fraction": 0.15}
        elif step["name"] == "evaluate":
            step["params"] = {"perplexity_margin": 0.0}
        elif step["name"] == "export_onnx":
            step["params"] = {"max_length": s.train_max_length}
        elif step["name"] == "quantize":
            step["params"] = {"max_quantize_drop": 0.05}
    canary = config["fleet"]["rollout"]["canary"]
    canary.update({"latency_slo_ms": 30000.0, "max_latency_ratio": 5.0, "ttft_slo_ms": 5000.0,
                   "max_ttft_ratio": 5.0, "max_tpot_ratio": 5.0, "max_rating_drop": 0.2,
                   "max_reference_score_drop": 0.1})
    return config
