"""Breach episodes in the audit log: one line when a model version's breach begins, one when it
ends (naming the evaluation that ended it), and at most one reminder per interval in between.

Evaluations come every few seconds; a line for each of them buried the decisions that matter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

BEGAN = "breach.began"
ONGOING = "breach.ongoing"
ENDED = "breach.ended"
DEFAULT_REMINDER_S = 3600.0


@dataclass(frozen=True)
class Episode:
    """What the audit log already says about a version's current breach."""

    began_at: float | None  # audit time of its breach.began line
    began_evaluation_id: str | None
    last_line_at: float | None  # audit time of its newest began/ongoing line


def current_episode(lines: Iterable[tuple[float, str, Mapping[str, Any]]],
                    version: str) -> Episode:
    """``version``'s open episode from the model's audit lines (ts, action, evidence), newest
    first; an empty Episode when the newest of its lines is an end (or it has none)."""
    last_line_at = None
    for ts, action, evidence in lines:
        if evidence.get("model_version") != version:
            continue
        if action == ENDED:
            break
        last_line_at = ts if last_line_at is None else last_line_at
        if action == BEGAN:
            return Episode(ts, evidence.get("evaluation_id"), last_line_at)
    return Episode(None, None, last_line_at)


def breach_line(previous_breached: bool | None, breached: bool, episode: Episode, now: float,
                reminder_s: float) -> str | None:
    """The audit action for a new evaluation of a model version, or None for no line.

    ``previous_breached`` is the verdict of the version's evaluation before this one (None when
    this is its first). ``reminder_s`` <= 0 turns reminders off.
    """
    if breached and not previous_breached:
        return BEGAN
    if not breached:
        return ENDED if previous_breached else None
    if reminder_s <= 0:
        return None
    if episode.last_line_at is None or now - episode.last_line_at >= reminder_s:
        return ONGOING
    return None
