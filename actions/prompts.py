"""A generator's (prompt, target) pairs as the model sees them: a chat row's prompt rendered by
the tokenizer's chat template (deploy.generation.render_chat, as the replica renders it), and
the gate's targets: the corrected references, or well-rated answers when references are few."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from actions.snapshot import GOOD_RATING, Row, generator_pairs
from deploy.generation import render_chat

Pair = tuple[str, str]


def render_prompt(tokenizer: Any, row: Row) -> str:
    """The row's chat through the template when the snapshot kept its ``messages``, else
    its text as captured."""
    messages = getattr(row, "messages", None)  # (role, content) turns, when a chat
    if not messages:
        return row.text
    return render_chat(tokenizer, [{"role": role, "content": content or ""}
                                   for role, content in messages])


def training_pairs(rows: Sequence[Row], tokenizer: Any) -> tuple[list[Pair], int]:
    """actions.snapshot's pairs (references first, then answers rated >= GOOD_RATING; a poorly
    rated answer never) with each prompt rendered; and how many rows gave none."""
    pairs, skipped = generator_pairs(rows)
    by_text = {r.text: r for r in rows}
    return [(render_prompt(tokenizer, by_text[text]), target) for text, target in pairs], skipped


def reference_pairs(rows: Sequence[Row], tokenizer: Any, min_rows: int) -> tuple[list[Pair], str]:
    """What the gate scores against: the references; when fewer than ``min_rows``, also the
    well-rated answers (said so by the second value: "references" or "references+rated")."""
    refs = [(render_prompt(tokenizer, r), r.reference) for r in rows if r.reference is not None]
    if len(refs) >= min_rows:
        return refs, "references"
    rated = [(render_prompt(tokenizer, r), r.output) for r in rows
             if r.reference is None and r.rating is not None and r.rating >= GOOD_RATING
             and r.output]
    return [*refs, *rated], "references+rated"  # type: ignore[list-item]
