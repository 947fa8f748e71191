"""The window frame's column contract between the daemon (which flattens events into frames)
and the detectors (which read them): one row per inference, these columns, and each text
column's precomputed features under ``<column>.<feature>``."""

from __future__ import annotations

from typing import Final

TS: Final = "ts"  # event time, epoch seconds
REQUEST_ID: Final = "request_id"
LATENCY_MS: Final = "latency_ms"
STATUS: Final = "status"  # "ok" | "error"
INPUT_TEXT: Final = "input_text"  # the text input, a prompt, or a chat's last user message
PREDICTION: Final = "prediction"  # a classifier's label
SCORE: Final = "score"  # a classifier's confidence
OUTPUT_TEXT: Final = "output_text"  # a generator's answer
TTFT_MS: Final = "ttft_ms"  # a generator's time to first token (NaN when not reported)
TOKENS_OUT: Final = "tokens_out"  # tokens generated, as a float (NaN when not reported)
FINISH_REASON: Final = "finish_reason"  # "stop" | "length" | "error" | ... (None: not given)
LABEL: Final = "label"  # joined feedback: the true class (classifiers)
REFERENCE: Final = "reference"  # joined feedback: the corrected answer (generators)
RATING: Final = "rating"  # joined feedback: a rating in [0, 1]
# Derived, not an event field: ROUGE-L F of output_text vs reference (see detectors.quality);
# the evaluator may supply it precomputed, else the suite scores the pairs itself.
REFERENCE_SCORE: Final = "reference_score"

EVENT_COLUMNS: Final = (TS, REQUEST_ID, LATENCY_MS, STATUS, INPUT_TEXT, PREDICTION, SCORE,
                        OUTPUT_TEXT, TTFT_MS, TOKENS_OUT, FINISH_REASON)
FEEDBACK_COLUMNS: Final = (LABEL, REFERENCE, RATING)


def feature_column(column: str, feature: str) -> str:
    """Where a text column's precomputed feature lives: ``input_text.length``."""
    return f"{column}.{feature}"
