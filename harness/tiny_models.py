"""Tiny real models for tests, built in seconds from configs: a synthetic review corpus with a
learnable signal in two domains, tokenizers trained with `tokenizers`, a BERT-style classifier and
a GPT-2, plus exported ONNX classifiers. ``cached_*`` builds each distinct model once per process.
"""

from __future__ import annotations

import atexit
import functools
import random
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

LABELS = ("negative", "positive")

# Each domain has its own nouns and its own sentiment cues beside shared ones, so a model trained
# on one domain transfers only partly to the other: the drift a fine-tune should repair.
_DOMAINS: dict[str, dict[str, list[str]]] = {
    "electronics": {
        "nouns": ["battery", "screen", "charger", "laptop", "speaker", "keyboard", "camera",
                  "headphones", "router", "tablet"],
        "positive": ["crisp", "fast", "reliable", "sturdy", "responsive", "bright"],
        "negative": ["overheats", "laggy", "flimsy", "dead", "glitchy", "dim"],
    },
    "restaurants": {
        "nouns": ["pasta", "waiter", "dessert", "soup", "pizza", "salad", "steak", "coffee",
                  "service", "bread"],
        "positive": ["delicious", "fresh", "tasty", "friendly", "cozy", "flavorful"],
        "negative": ["bland", "stale", "cold", "rude", "greasy", "soggy"],
    },
}
_SHARED = {
    "positive": ["great", "excellent", "love", "wonderful", "good"],
    "negative": ["terrible", "awful", "hate", "poor", "bad"],
}
_FILLER = ["the", "it", "was", "really", "very", "and", "this", "my", "so", "quite", "overall",
           "i", "think", "would", "say", "again", "today", "after", "a", "week"]

DOMAINS = tuple(_DOMAINS)


def review_corpus(
    n: int, domain: str = "electronics", seed: int = 0, noise: float = 0.05
) -> list[tuple[str, str]]:
    """``n`` (text, label) reviews; the label follows the majority of sentiment cues, and a
    ``noise`` share of labels is flipped so no model reaches 100%."""
    if domain not in _DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    if n < 0 or not 0.0 <= noise < 0.5:
        raise ValueError("n must be >= 0 and noise in [0, 0.5)")
    rng = random.Random(f"{domain}:{seed}")
    vocab = _DOMAINS[domain]
    out: list[tuple[str, str]] = []
    for _ in range(n):
        label = rng.choice(LABELS)
        other = LABELS[1 - LABELS.index(label)]
        # Mostly domain cues: what distinguishes the domains for a model.
        cues = [rng.choice(vocab[label] if rng.random() < 0.7 else _SHARED[label])
                for _ in range(rng.randint(1, 2))]
        if rng.random() < 0.3:  # one contrary cue makes it harder than keyword spotting
            cues.append(rng.choice(vocab[other] + _SHARED[other]))
            cues.append(rng.choice(vocab[label]))
        words = [rng.choice(vocab["nouns"]), *cues, *rng.sample(_FILLER, rng.randint(2, 6))]
        rng.shuffle(words)
        if rng.random() < noise:
            label = other
        out.append((" ".join(words), label))
    return out


def train_tokenizer(
    texts: Sequence[str], vocab_size: int = 400, kind: Literal["wordpiece", "bpe"] = "wordpiece"
) -> Any:
    """A fast tokenizer trained on ``texts``: BERT-style WordPiece or GPT-2-style byte BPE."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if kind == "wordpiece":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.train_from_iterator(
            texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials)
        )
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
        tok.decoder = decoders.WordPiece()
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
            sep_token="[SEP]", mask_token="[MASK]",
        )
    if kind == "bpe":
        eos = "<|endoftext|>"
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.train_from_iterator(
            texts,
            trainers.BpeTrainer(
                vocab_size=vocab_size, special_tokens=[eos],
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            ),
        )
        tok.decoder = decoders.ByteLevel()
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token=eos, eos_token=eos, pad_token=eos, unk_token=eos
        )
    raise ValueError(f"kind must be wordpiece or bpe, got {kind!r}")


def _train(model: Any, batches: list[dict[str, Any]], steps: int, lr: float, seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        loss = model(**batches[step % len(batches)]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def build_classifier(
    out_dir: Path,
    examples: Sequence[tuple[str, str]],
    labels: Sequence[str] = LABELS,
    seed: int = 0,
    steps: int = 60,
    tokenizer_texts: Sequence[str] | None = None,
    max_length: int = 64,
) -> Path:
    """A tiny BERT-style classifier (hidden 32, 2 layers) trained for ``steps`` so it beats
    chance; save_pretrained layout with safetensors. ``tokenizer_texts`` defaults to the texts
    of ``examples`` (pass more domains to give later fine-tunes a vocabulary)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    out_dir = Path(out_dir)
    texts = [t for t, _ in examples]
    tokenizer = train_tokenizer(list(tokenizer_texts or texts), vocab_size=400)
    torch.manual_seed(seed)
    config = BertConfig(  # type: ignore[call-arg]  # num_labels etc. go to PretrainedConfig
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=max_length, type_vocab_size=1,
        num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)}, pad_token_id=tokenizer.pad_token_id,
    )
    model = BertForSequenceClassification(config)
    index = {name: i for i, name in enumerate(labels)}
    batches = []
    for start in range(0, len(examples), 32):
        chunk = examples[start : start + 32]
        enc = tokenizer([t for t, _ in chunk], padding=True, truncation=True,
                        max_length=max_length, return_tensors="pt")
        enc["labels"] = torch.tensor([index[y] for _, y in chunk])
        batches.append(dict(enc))
    return _train_and_save(model, tokenizer, batches, steps, seed, max_length, out_dir)


def _train_and_save(model: Any, tokenizer: Any, batches: list[dict[str, Any]], steps: int,
                    seed: int, max_length: int, out_dir: Path) -> Path:
    """A few seeded steps (none when ``steps`` is 0), then model and tokenizer saved."""
    if steps and batches:
        _train(model, batches, steps, lr=3e-3, seed=seed)
    model.save_pretrained(out_dir)
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_causal_lm(
    out_dir: Path, texts: Sequence[str], seed: int = 0, steps: int = 40, max_length: int = 64
) -> Path:
    """A tiny GPT-2 (n_embd 32, 2 layers) with a byte-BPE tokenizer, briefly trained on texts."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(list(texts), vocab_size=400, kind="bpe")
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=max_length,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(config)
    batches = []
    for start in range(0, len(texts), 32):
        enc = tokenizer(
            [tokenizer.bos_token + t for t in texts[start : start + 32]], padding=True,
            truncation=True, max_length=max_length, return_tensors="pt",
        )
        labels = enc["input_ids"].clone()
        labels[enc["attention_mask"] == 0] = -100
        enc["labels"] = labels
        batches.append(dict(enc))
    return _train_and_save(model, tokenizer, batches, steps, seed, max_length, out_dir)


def build_onnx_classifier(
    out_dir: Path,
    examples: Sequence[tuple[str, str]] | None = None,
    labels: Sequence[str] = LABELS,
    seed: int = 0,
    precision: Literal["fp32", "int8"] = "fp32",
    model_dir: Path | None = None,
) -> Path:
    """An exported classifier directory per the model artifact contract, made by the actions'
    export (and quantize) code; from ``model_dir`` or a fresh tiny classifier."""
    from actions.export import export_model
    from actions.quantize import quantize_model

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if model_dir is None:
        data = list(examples) if examples is not None else review_corpus(400, seed=seed)
        model_dir = build_classifier(out_dir.parent / f"{out_dir.name}.torch", data, labels, seed)
    if precision == "fp32":
        export_model(Path(model_dir), out_dir)
        return out_dir
    fp32_dir = out_dir.parent / f"{out_dir.name}.fp32"
    export_model(Path(model_dir), fp32_dir)
    quantize_model(fp32_dir, out_dir)
    return out_dir


# --- one build per distinct model per process (tests of every package share these) ---

@functools.cache
def _cache_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="lifeguard-tiny-"))
    atexit.register(shutil.rmtree, root, True)
    return root


@functools.cache
def cached_classifier(domain: str = "electronics", n: int = 400, seed: int = 0) -> Path:
    """A tiny classifier trained on ``n`` reviews of ``domain``, its tokenizer knowing both
    domains. Treat as read-only."""
    examples = review_corpus(n, domain, seed)
    vocab = [t for d in DOMAINS for t, _ in review_corpus(300, d, seed + 1000)]
    out = _cache_root() / f"clf-{domain}-{n}-{seed}"
    return build_classifier(out, examples, seed=seed, tokenizer_texts=vocab)


@functools.cache
def cached_causal_lm(domain: str = "electronics", n: int = 300, seed: int = 0) -> Path:
    """A tiny GPT-2 trained on ``n`` reviews of ``domain``. Treat as read-only."""
    texts = [t for t, _ in review_corpus(n, domain, seed)]
    return build_causal_lm(_cache_root() / f"lm-{domain}-{n}-{seed}", texts, seed=seed)


@functools.cache
def cached_onnx_classifier(precision: str = "fp32", domain: str = "electronics") -> Path:
    """The cached tiny classifier exported (and quantized) per the artifact contract."""
    out = _cache_root() / f"onnx-{domain}-{precision}"
    return build_onnx_classifier(
        out, precision="fp32" if precision == "fp32" else "int8",
        model_dir=cached_classifier(domain),
    )


@functools.cache
def cached_onnx_causal_lm(domain: str = "electronics") -> Path:
    """The cached tiny GPT-2 exported to ONNX with its KV cache per the artifact contract (fp32)."""
    from actions.export import export_model

    out = _cache_root() / f"onnx-lm-{domain}"
    export_model(cached_causal_lm(domain), out)
    return out
