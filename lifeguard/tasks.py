"""The task vocabulary every room speaks: Hugging Face's names for the two model heads."""

from __future__ import annotations

from typing import Final, Literal, get_args

Task = Literal["sequence-classification", "causal-lm"]
TASKS: Final[tuple[str, ...]] = get_args(Task)
SEQUENCE_CLASSIFICATION: Final = "sequence-classification"
CAUSAL_LM: Final = "causal-lm"
