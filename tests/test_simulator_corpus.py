"""The review corpus proves the demo's premise with the simplest model there is: a bag-of-words
logistic regression trained on the base domain loses real accuracy on a shifted domain, and
recovers once trained on that domain's labels."""

from __future__ import annotations

import math
import random

import pytest
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

from simulator.corpus import (
    BASE_DOMAIN,
    DOMAINS,
    LABELS,
    SHIFT_DOMAIN,
    default_concept_words,
    generate_review,
    reinterpret,
    reviews,
    tokenizer_texts,
    training_examples,
)


def _xy(domain: str, n: int, seed: int) -> tuple[list[str], list[str]]:
    data = reviews(n, domain, seed)
    return [r.text for r in data], [r.label for r in data]


@pytest.fixture(scope="module")
def vectorizer() -> CountVectorizer:
    # Fitted on every domain's texts: what a tokenizer that knows all words would see.
    return CountVectorizer(binary=True).fit(tokenizer_texts(400, seed=3))


def _accuracy(vectorizer: CountVectorizer, train: str, test: str) -> float:
    x_train, y_train = _xy(train, 1500, seed=1)
    x_test, y_test = _xy(test, 1500, seed=2)
    model = LogisticRegression(max_iter=2000).fit(vectorizer.transform(x_train), y_train)
    return float(model.score(vectorizer.transform(x_test), y_test))


@pytest.mark.parametrize("shifted", ["restaurants", "hotels"])
def test_base_model_loses_accuracy_on_the_shift_and_recovers_when_trained_on_it(
        vectorizer: CountVectorizer, shifted: str) -> None:
    base_on_base = _accuracy(vectorizer, BASE_DOMAIN, BASE_DOMAIN)
    base_on_shift = _accuracy(vectorizer, BASE_DOMAIN, shifted)
    shift_on_shift = _accuracy(vectorizer, shifted, shifted)
    # Label noise is 5%: a good model sits near 0.9, never at 1.
    assert 0.85 <= base_on_base <= 0.97
    assert base_on_shift <= base_on_base - 0.15, (base_on_base, base_on_shift)
    assert shift_on_shift >= 0.85
    assert shift_on_shift >= base_on_shift + 0.15


def test_training_examples_are_deterministic_balanced_and_from_the_base_domain() -> None:
    examples = training_examples(2000, seed=4)
    assert examples == training_examples(2000, seed=4)
    assert examples != training_examples(2000, seed=5)
    assert len(examples) == 2000 and {y for _, y in examples} == set(LABELS)
    positive = sum(y == "positive" for _, y in examples) / len(examples)
    assert abs(positive - 0.5) < 4 * math.sqrt(0.25 / 2000)
    shifted_nouns = set(DOMAINS[SHIFT_DOMAIN].nouns)
    assert not any(shifted_nouns & set(text.split()) for text, _ in examples)


def test_label_noise_share_is_within_binomial_bounds() -> None:
    data = reviews(4000, SHIFT_DOMAIN, seed=9, noise=0.1)
    share = sum(r.noisy for r in data) / len(data)
    assert abs(share - 0.1) < 4 * math.sqrt(0.1 * 0.9 / 4000)
    assert not any(r.noisy for r in reviews(500, SHIFT_DOMAIN, seed=9, noise=0.0))


def test_domains_disagree_about_flip_words_in_the_data() -> None:
    """The words the base model leans on mean the opposite after the shift, in the generated
    labels themselves (not just in the tables)."""
    base = {w: p for w, _, p in DOMAINS[BASE_DOMAIN].flips}
    shift = {w: p for w, _, p in DOMAINS[SHIFT_DOMAIN].flips}
    opposite = [w for w in base if w in shift and base[w] != shift[w]]
    assert len(opposite) >= 5

    data = {d: reviews(3000, d, seed=6) for d in (BASE_DOMAIN, SHIFT_DOMAIN)}

    def positive_share(domain: str, word: str) -> float:
        hits = [r.label for r in data[domain] if word in r.cues]
        assert len(hits) >= 30
        return sum(y == "positive" for y in hits) / len(hits)

    for word in opposite:
        base_share, shift_share = positive_share(BASE_DOMAIN, word), positive_share(
            SHIFT_DOMAIN, word)
        assert abs(base_share - shift_share) > 0.5, (word, base_share, shift_share)


def test_negations_are_common_after_the_shift_and_rare_before() -> None:
    def negated(domain: str) -> float:
        return sum(" not " in f" {r.text} " for r in reviews(2000, domain, seed=2)) / 2000

    assert negated(SHIFT_DOMAIN) > 2 * negated(BASE_DOMAIN)


def test_reinterpret_flips_only_reviews_carried_by_the_flipped_words() -> None:
    words = frozenset(default_concept_words())
    data = reviews(3000, BASE_DOMAIN, seed=8)
    changed = [reinterpret(r, words) for r in data]
    for before, after in zip(data, changed, strict=True):
        assert after.text == before.text
        assert (after.label != before.label) == bool(words & set(before.cues))
    share = sum(a.label != b.label for a, b in zip(data, changed, strict=True)) / len(data)
    assert 0.15 < share < 0.5  # enough to hurt a model, not a wholesale relabelling


def test_bad_arguments_raise_value_error() -> None:
    rng = random.Random(0)
    with pytest.raises(ValueError, match="domain"):
        generate_review(rng, "spaceships")
    with pytest.raises(ValueError, match="noise"):
        generate_review(rng, BASE_DOMAIN, noise=0.5)
    with pytest.raises(ValueError, match="n must be"):
        reviews(-1)
