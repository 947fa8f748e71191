"""The window frame's column contract between the daemon (which flattens events into frames)
and the detectors (which read them): one row per inference, these columns, and each text
column's precomputed features under ``<column>.<feature>``."""

from __future__ import annotations

from typing import Final

TS: Final = "ts"  # event time, epoch seconds
REQUEST_ID: Final = "request_id"
LATENCY_MS: Final = "latency_ms"
STATUS: Final = "status"  # "ok" | "error"
INPUT_TEXT: Final = "input_text"
PREDICTION: Final = "prediction"  # a classifier's label
SCORE: Final = "score"  # a classifier's confidence
OUTPUT_TEXT: Final = "output_text"  # a generator's answer
LABEL: Final = "label"  # joined feedback: the true class, or the corrected reference
RATING: Final = "rating"  # joined feedback: a rating in [0, 1]

EVENT_COLUMNS: Final = (TS, REQUEST_ID, LATENCY_MS, STATUS, INPUT_TEXT, PREDICTION, SCORE,
                        OUTPUT_TEXT)
FEEDBACK_COLUMNS: Final = (LABEL, RATING)


def feature_column(column: str, feature: str) -> str:
    """Where a text column's precomputed feature lives: ``input_text.length``."""
    return f"{column}.{feature}"
