"""The support-chat corpus and the ``support`` scenario's plan: users ask a support bot about
product A (a router), then about product B (a thermostat) with new words and new right answers.

Each product has intents (reset, pairing, update, ...) with one correct answer; a question is a
seeded paraphrase of the intent naming the product's parts. A model trained on product A
answers a product B question with A's answer (wrong for B), and recovers once fine-tuned on
B's corrected references. Everything is deterministic for a given seed.
"""

from __future__ import annotations

import math
import random
import secrets
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from lifeguard.config import StrictModel

PROMPT_FORMAT = "user: {question}\nassistant:"  # the replica's rendering of a one-turn chat


@dataclass(frozen=True)
class Product:
    name: str
    nouns: tuple[str, ...]  # the parts users name in their questions
    answers: dict[str, str]  # intent -> the correct answer


_QUESTIONS: dict[str, tuple[str, ...]] = {
    "reset": ("how do i reset my {product}", "my {noun} is stuck, how do i reset the {product}",
              "what is the way to factory reset the {product}",
              "the {noun} froze, can i reset it"),
    "pair": ("how do i connect my phone to the {product}",
             "how do i pair the {product} with the app", "my phone cannot find the {noun}",
             "the app does not see my {product}"),
    "update": ("how do i update the {product}", "is there new firmware for the {noun}",
               "how can i install the latest update on my {product}",
               "the {product} says an update failed"),
    "light": ("what does the blinking light on the {noun} mean",
              "why is the light on my {product} red", "the {noun} light keeps flashing",
              "what does the orange light on the {product} mean"),
    "warranty": ("how long is the warranty on the {product}",
                 "is my {noun} still under warranty", "can i return the {product}",
                 "what does the warranty of the {product} cover"),
}
INTENTS = tuple(_QUESTIONS)
_LEADS = ("", "", "", "hi, ", "hello, ", "quick question: ", "please help, ")

PRODUCTS: dict[str, Product] = {
    "router": Product(
        name="router",
        nouns=("router", "antenna", "ethernet port", "wifi network", "modem"),
        answers={
            "reset": "hold the reset pin on the back for ten seconds until the lights blink "
                     "blue",
            "pair": "open the wifi settings on your phone and choose the network printed on "
                    "the label",
            "update": "open the admin page at the router address and press check for updates",
            "light": "a blinking blue light means the router is starting and a red light "
                     "means no internet",
            "warranty": "the router has a two year warranty that covers hardware faults",
        }),
    "thermostat": Product(
        name="thermostat",
        nouns=("thermostat", "heating schedule", "boiler", "temperature sensor", "display"),
        answers={
            "reset": "press and hold the dial for twenty seconds until the display shows zero",
            "pair": "install the climate app, tap add device and scan the code inside the "
                    "cover",
            "update": "the thermostat updates itself overnight when the boiler is idle",
            "light": "an orange light means the sensor needs calibration and red means the "
                     "boiler is off",
            "warranty": "the thermostat has a five year warranty including the sensor",
        }),
}
BASE_PRODUCT = "router"
SHIFT_PRODUCT = "thermostat"


@dataclass(frozen=True)
class Exchange:
    """One support question and its correct answer."""

    question: str
    answer: str
    product: str
    intent: str

    @property
    def prompt(self) -> str:
        return PROMPT_FORMAT.format(question=self.question)


def generate_exchange(rng: random.Random, product: str = BASE_PRODUCT) -> Exchange:
    if product not in PRODUCTS:
        raise ValueError(f"product must be one of {tuple(PRODUCTS)}, got {product!r}")
    spec = PRODUCTS[product]
    intent = rng.choice(INTENTS)
    question = rng.choice(_QUESTIONS[intent]).format(product=spec.name,
                                                    noun=rng.choice(spec.nouns))
    return Exchange(rng.choice(_LEADS) + question, spec.answers[intent], product, intent)


def exchanges(n: int, product: str = BASE_PRODUCT, seed: int = 0) -> list[Exchange]:
    """``n`` exchanges about ``product``, the same for the same (product, seed)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"support:{product}:{seed}")
    return [generate_exchange(rng, product) for _ in range(n)]


def training_pairs(n: int, product: str = BASE_PRODUCT, seed: int = 0) -> list[tuple[str, str]]:
    """(prompt, answer) pairs the demo's base model learns: prompts as the replica renders a
    one-turn chat, answers with a leading space (what follows ``assistant:``)."""
    return [(e.prompt, " " + e.answer) for e in exchanges(n, product, seed)]


def tokenizer_texts(n_per_product: int = 200, seed: int = 0) -> list[str]:
    """Prompts and answers of every product, so a tokenizer knows the shift's words too."""
    return [f"{e.prompt} {e.answer}" for p in PRODUCTS
            for e in exchanges(n_per_product, p, seed + 10_000)]


SupportPhase = Literal["steady", "pre", "post"]


class SupportScenarioConfig(StrictModel):
    """The ``support`` scenario: one-turn chats about ``base_product`` until ``shift_at_s``,
    then about ``shift_product`` (never when ``stationary``). A covered answer gets its
    feedback ``feedback_delay_s`` (+ jitter) later: the corrected reference and a thumb."""

    rate: float = Field(default=4.0, gt=0, description="requests per second")
    duration_s: float = Field(default=300.0, gt=0)
    shift_at_s: float = Field(default=60.0, ge=0)
    stationary: bool = False
    base_product: str = BASE_PRODUCT
    shift_product: str = SHIFT_PRODUCT
    feedback_delay_s: float = Field(default=3.0, ge=0)
    feedback_jitter_s: float = Field(default=2.0, ge=0)
    reference_coverage: float = Field(default=0.8, ge=0, le=1,
                                      description="share of answers given a corrected reference")
    rating_coverage: float = Field(default=0.9, ge=0, le=1,
                                   description="share of answers given a thumb")
    good_score: float = Field(default=0.5, ge=0, le=1,
                              description="ROUGE-L at or above which a user gives thumbs up")
    max_tokens: int = Field(default=32, ge=1)
    model: str = Field(default="support-bot", min_length=1)
    seed: int = 0
    run_tag: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,40}$")

    @model_validator(mode="after")
    def _consistent(self) -> SupportScenarioConfig:
        for key in ("base_product", "shift_product"):
            if getattr(self, key) not in PRODUCTS:
                raise ValueError(f"{key} must be one of {tuple(PRODUCTS)}")
        if not self.stationary and (self.base_product == self.shift_product
                                    or self.shift_at_s >= self.duration_s):
            raise ValueError("a shift needs another product and shift_at_s before the end")
        return self


@dataclass(frozen=True)
class PlannedChat:
    index: int
    offset_s: float
    request_id: str
    phase: SupportPhase
    exchange: Exchange
    give_reference: bool
    give_rating: bool
    feedback_delay_s: float


class SupportScenario:
    """The plan: ``plan(i)`` for every ``i`` below ``n_requests``, seeded by (seed, i)."""

    def __init__(self, config: SupportScenarioConfig) -> None:
        self.config = config
        self.run_tag = config.run_tag or secrets.token_hex(4)
        self.n_requests = max(1, math.floor(config.rate * config.duration_s))

    @property
    def shift_at_s(self) -> float | None:
        return None if self.config.stationary else self.config.shift_at_s

    def plan(self, index: int) -> PlannedChat:
        if not 0 <= index < self.n_requests:
            raise IndexError(f"request {index} is outside the plan (0..{self.n_requests - 1})")
        cfg = self.config
        offset = index / cfg.rate
        shifted = self.shift_at_s is not None and offset >= self.shift_at_s
        text_rng = random.Random(f"{cfg.seed}:{index}:chat")
        feedback_rng = random.Random(f"{cfg.seed}:{index}:feedback")
        exchange = generate_exchange(text_rng, cfg.shift_product if shifted else cfg.base_product)
        phase: SupportPhase = "steady" if cfg.stationary else ("post" if shifted else "pre")
        return PlannedChat(
            index=index, offset_s=offset, request_id=f"{self.run_tag}-{index:08d}", phase=phase,
            exchange=exchange, give_reference=feedback_rng.random() < cfg.reference_coverage,
            give_rating=feedback_rng.random() < cfg.rating_coverage,
            feedback_delay_s=cfg.feedback_delay_s + feedback_rng.random() * cfg.feedback_jitter_s)
