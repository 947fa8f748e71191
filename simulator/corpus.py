"""The review corpus: sentiment reviews in several domains, each with its own nouns, cues and
idioms beside shared cues, where the domains disagree about what some words mean.

A classifier trained on the base domain (electronics) leans on cues that mislead it in the
others: "the wait was long" is bad where "the battery life is long" was good, "to die for" is
praise where "it will die on you" was a complaint, and negations ("not great") are common there
and rare here. So it loses real accuracy after the shift and recovers once fine-tuned on the new
domain's labelled traffic. Everything is deterministic for a given ``random.Random``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Literal

LABELS = ("negative", "positive")
BASE_DOMAIN = "electronics"
SHIFT_DOMAIN = "restaurants"

CueKind = Literal["own", "shared", "flip", "idiom", "negation"]

# Shared cues mean the same everywhere: what transfers across the shift.
SHARED = {
    "positive": ("great", "excellent", "wonderful", "good", "perfect", "amazing"),
    "negative": ("terrible", "awful", "poor", "bad", "horrible", "disappointing"),
}
_BE = ("is", "was", "felt", "seemed")
_BE_PLURAL = ("are", "were", "felt", "seemed")
_ADVERB = ("", "", "really", "very", "so", "quite", "pretty")
_JOIN = (", ", " and ", ". ", "; ", ", but ")
_OPENERS = ("", "", "", "honestly ", "overall ", "well ", "to be fair ")


@dataclass(frozen=True)
class Domain:
    """One kind of review. ``flips`` are (word, subject, polarity): words whose polarity here
    may be the opposite of another domain's; ``mix`` weighs how each cue kind is drawn."""

    name: str
    nouns: tuple[str, ...]
    positive: tuple[str, ...]
    negative: tuple[str, ...]
    idioms: dict[str, tuple[str, ...]]
    flips: tuple[tuple[str, str, str], ...]
    neutral: tuple[str, ...]
    mix: dict[CueKind, float] = field(default_factory=dict)
    contrary_rate: float = 0.2  # one cue of the other polarity, outvoted: not keyword spotting

    def __post_init__(self) -> None:
        if not self.nouns or not self.positive or not self.negative or not self.neutral:
            raise ValueError(f"domain {self.name!r} needs nouns, positive, negative and neutral")
        if set(self.idioms) != set(LABELS):
            raise ValueError(f"domain {self.name!r}: idioms must be keyed by {LABELS}")
        if any(p not in LABELS for _, _, p in self.flips):
            raise ValueError(f"domain {self.name!r}: flip polarity must be one of {LABELS}")
        if not self.mix or any(w < 0 for w in self.mix.values()) or sum(self.mix.values()) <= 0:
            raise ValueError(f"domain {self.name!r}: mix needs non-negative weights")

    def cue_words(self, label: str) -> tuple[str, ...]:
        """Single-word cues of ``label`` in this domain (own adjectives and flips)."""
        own = self.positive if label == "positive" else self.negative
        return own + tuple(w for w, _, p in self.flips if p == label)


DOMAINS: dict[str, Domain] = {
    "electronics": Domain(
        name="electronics",
        nouns=("battery", "screen", "charger", "laptop", "speaker", "keyboard", "camera",
               "headphones", "router", "tablet", "phone", "monitor"),
        positive=("crisp", "responsive", "reliable", "sturdy", "bright", "snappy", "accurate",
                  "durable"),
        negative=("laggy", "flimsy", "glitchy", "dim", "buggy", "unstable", "scratched",
                  "defective"),
        idioms={"positive": ("works like a charm", "worth every penny", "a solid upgrade"),
                "negative": ("the battery will die on you", "stopped working after a week",
                             "a waste of money")},
        flips=(("long", "battery life", "positive"), ("cold", "case", "positive"),
               ("small", "charger", "positive"), ("thin", "laptop", "positive"),
               ("quiet", "fan", "positive"), ("hot", "charger", "negative"),
               ("heavy", "laptop", "negative"), ("busy", "home screen", "negative"),
               ("packed", "box", "negative")),
        neutral=("i bought it for work", "it arrived on monday", "i use it every day",
                 "setup took ten minutes", "i compared it with my old one",
                 "it came with a usb cable", "i updated the firmware"),
        mix={"own": 0.45, "shared": 0.28, "flip": 0.20, "idiom": 0.05, "negation": 0.02},
    ),
    "restaurants": Domain(
        name="restaurants",
        nouns=("pasta", "waiter", "dessert", "soup", "pizza", "salad", "steak", "coffee",
               "bread", "curry", "tacos", "burger"),
        positive=("delicious", "tasty", "flavorful", "tender", "generous", "cozy", "fresh",
                  "friendly"),
        negative=("bland", "stale", "rude", "greasy", "soggy", "overcooked", "salty", "dirty"),
        idioms={"positive": ("the dessert was to die for", "it hit the spot",
                             "it blew me away"),
                "negative": ("never again", "we sent it back", "the portion was a joke")},
        flips=(("long", "wait", "negative"), ("cold", "soup", "negative"),
               ("small", "portions", "negative"), ("thin", "broth", "negative"),
               ("quiet", "dining room", "negative"), ("hot", "food", "positive"),
               ("heavy", "portions", "positive"), ("busy", "place", "positive"),
               ("packed", "place", "positive")),
        neutral=("we went on a friday night", "we ordered the special",
                 "we sat by the window", "it was my first visit", "we had a reservation",
                 "we came with the kids", "the menu changes weekly"),
        mix={"own": 0.40, "shared": 0.30, "flip": 0.15, "idiom": 0.08, "negation": 0.07},
    ),
    "hotels": Domain(
        name="hotels",
        nouns=("room", "bed", "lobby", "pool", "breakfast", "staff", "shower", "view",
               "balcony", "elevator"),
        positive=("spotless", "spacious", "comfy", "helpful", "charming", "relaxing"),
        negative=("dingy", "cramped", "musty", "unhelpful", "smelly", "shabby"),
        idioms={"positive": ("a home away from home", "we would stay again",
                             "the view was to die for"),
                "negative": ("a total dump", "never again", "we checked out early")},
        flips=(("long", "line at check-in", "negative"), ("small", "room", "negative"),
               ("thin", "walls", "negative"), ("cold", "shower", "negative"),
               ("hot", "water", "positive"), ("heavy", "curtains", "positive"),
               ("packed", "breakfast buffet", "positive")),
        neutral=("we stayed three nights", "we booked it online", "we arrived late",
                 "it was a business trip", "we parked in the garage"),
        mix={"own": 0.40, "shared": 0.30, "flip": 0.15, "idiom": 0.08, "negation": 0.07},
    ),
}


@dataclass(frozen=True)
class Review:
    """One generated review. ``cues`` are the words that carry its sentiment (what label-only
    concept drift may re-interpret); ``noisy`` marks a label flipped by annotation noise."""

    text: str
    label: str
    domain: str
    cues: tuple[str, ...]
    noisy: bool = False


def _other(label: str) -> str:
    return LABELS[1 - LABELS.index(label)]


def _be(rng: random.Random, subject: str) -> str:
    plural = subject.endswith("s") and not subject.endswith(("ss", "us"))
    return rng.choice(_BE_PLURAL if plural else _BE)


def _cue_clause(rng: random.Random, domain: Domain, label: str) -> tuple[str, str]:
    """One clause carrying ``label`` in ``domain``, and the word that carries it."""
    kinds = list(domain.mix)
    kind = rng.choices(kinds, weights=[domain.mix[k] for k in kinds])[0]
    flips = [(w, s) for w, s, p in domain.flips if p == label]
    if kind == "flip" and not flips:
        kind = "own"
    adverb = rng.choice(_ADVERB)
    lead = f"{adverb} " if adverb else ""
    if kind == "flip":
        word, subject = rng.choice(flips)
        return f"the {subject} {_be(rng, subject)} {lead}{word}", word
    if kind == "idiom":
        phrase = rng.choice(domain.idioms[label])
        return phrase, phrase
    if kind == "negation":
        # "not great" means negative; a model that reads words one by one sees "great".
        word, noun = rng.choice(SHARED[_other(label)]), rng.choice(domain.nouns)
        return f"the {noun} {_be(rng, noun)} not {word}", word
    pool = SHARED[label] if kind == "shared" else (
        domain.positive if label == "positive" else domain.negative)
    word, noun = rng.choice(pool), rng.choice(domain.nouns)
    if rng.random() < 0.3:
        return f"{word} {noun}", word
    return f"the {noun} {_be(rng, noun)} {lead}{word}", word


def generate_review(rng: random.Random, domain: str = BASE_DOMAIN,
                    noise: float = 0.05) -> Review:
    """One review of ``domain``: its label, then 1-3 cues for it, maybe one outvoted contrary
    cue, a neutral clause or two, and a ``noise`` share of labels flipped."""
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {tuple(DOMAINS)}, got {domain!r}")
    if not 0.0 <= noise < 0.5:
        raise ValueError(f"noise must be in [0, 0.5), got {noise}")
    spec = DOMAINS[domain]
    label = rng.choice(LABELS)
    clauses: list[str] = []
    cues: list[str] = []
    for _ in range(rng.choice((1, 2, 2, 3))):
        clause, word = _cue_clause(rng, spec, label)
        clauses.append(clause)
        cues.append(word)
    if rng.random() < spec.contrary_rate:
        clauses.append(_cue_clause(rng, spec, _other(label))[0])
        clause, word = _cue_clause(rng, spec, label)  # keeps the majority with the label
        clauses.append(clause)
        cues.append(word)
    clauses.extend(rng.sample(spec.neutral, rng.choice((1, 1, 2))))
    rng.shuffle(clauses)
    text = clauses[0]
    for clause in clauses[1:]:
        text += rng.choice(_JOIN) + clause
    text = rng.choice(_OPENERS) + text
    noisy = rng.random() < noise
    return Review(text=text, label=_other(label) if noisy else label, domain=domain,
                  cues=tuple(cues), noisy=noisy)


def reviews(n: int, domain: str = BASE_DOMAIN, seed: int = 0,
            noise: float = 0.05) -> list[Review]:
    """``n`` reviews of ``domain``, the same for the same (domain, seed, noise)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"corpus:{domain}:{seed}")
    return [generate_review(rng, domain, noise) for _ in range(n)]


def training_examples(n: int, seed: int = 0, domain: str = BASE_DOMAIN,
                      noise: float = 0.05) -> list[tuple[str, str]]:
    """``n`` labelled (text, label) examples: what the demo's base classifier is trained on.
    Seeds here never collide with the traffic a scenario sends (its requests use their own
    per-request generators), so the base model is not scored on its training data."""
    return [(r.text, r.label) for r in reviews(n, domain, seed, noise)]


def tokenizer_texts(n_per_domain: int = 300, seed: int = 0) -> list[str]:
    """Texts of every domain, for a tokenizer that later fine-tunes can rely on."""
    return [r.text for d in DOMAINS for r in reviews(n_per_domain, d, seed + 10_000, 0.0)]


def reinterpret(review: Review, flipped: frozenset[str]) -> Review:
    """Label-only concept drift: the same text, but if any of its cues is in ``flipped`` the
    label is now the opposite (what those words mean to the labellers changed)."""
    if not flipped.intersection(review.cues):
        return review
    return replace(review, label=_other(review.label))


def default_concept_words(domain: str = BASE_DOMAIN) -> tuple[str, ...]:
    """Cue words whose meaning a concept-drift scenario flips unless told otherwise: three of
    each polarity, so the labels move both ways and the class balance holds."""
    spec = DOMAINS[domain]
    return spec.positive[:3] + spec.negative[:3]
