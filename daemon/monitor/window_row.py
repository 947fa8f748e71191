"""One inference and its feedback as the windows keep them (``WindowRow``, ``Joined``), and
what each holds, estimated cheaply enough for the hot path (the window byte budget)."""

from __future__ import annotations

from typing import Any, NamedTuple

from daemon.events import ChatMessage, InferenceEvent


class WindowRow(NamedTuple):
    """One inference, as the windows keep it: what detectors need and nothing more. A tuple
    underneath (cheap to append, transposed in C by ``zip``), read by name."""

    ts: float
    request_id: str
    latency_ms: float
    status: str
    input_text: str | None  # the prompt: a chat's last user message (InferenceEvent.prompt_text)
    features: dict[str, Any] | None
    prediction: Any
    score: float | None
    output_text: str | None
    offset: int
    ttft_ms: float | None = None
    tokens_out: int | None = None
    finish_reason: str | None = None
    messages: list[ChatMessage] | None = None  # the whole chat, for the snapshot


class Joined(NamedTuple):
    """A request's feedback as the windows keep it: a class label and a corrected reference
    are kept apart (one is compared with a prediction, the other scored against a text)."""

    label: Any
    reference: str | None
    rating: float | None


def row_of(event: InferenceEvent, offset: int) -> WindowRow:
    text: Any = None
    features = event.input
    if features is not None:
        text = features.get("text")  # the classifier's case first: one lookup (hot path)
        if type(text) is not str:
            text = event.prompt_text
    output = event.output
    if output is None:
        return WindowRow(event.ts_s, event.request_id, event.latency_ms, event.status, text,
                         features, None, None, None, offset, event.ttft_ms, event.tokens_out,
                         None, event.messages)
    return WindowRow(event.ts_s, event.request_id, event.latency_ms, event.status, text,
                     features, output.label, output.score, output.text, offset, event.ttft_ms,
                     event.tokens_out, output.finish_reason, event.messages)


ROW_OVERHEAD = 256  # a row's tuple, floats and dict/deque slots, roughly
LABEL_OVERHEAD = 128


def row_bytes(row: WindowRow) -> int:
    """What a row holds, estimated from its text lengths (characters, not encoded bytes:
    an estimate that is cheap on the hot path and within 4x of the truth for any text)."""
    n = ROW_OVERHEAD + len(row.request_id) + len(row.output_text or "")
    features = row.features
    if features is None:
        return n + len(row.input_text or "")
    for key, value in features.items():
        n += len(key)
        if type(value) is str:
            n += len(value)
        elif type(value) is list:
            n += sum(len(getattr(m, "content", None) or "") + 32 for m in value)
        else:
            n += 16
    return n


def joined_bytes(request_id: str, joined: Joined) -> int:
    return (LABEL_OVERHEAD + len(request_id) + len(joined.reference or "")
            + (len(joined.label) if type(joined.label) is str else 16))
