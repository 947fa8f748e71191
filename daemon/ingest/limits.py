"""Byte caps on what one event may make the daemon hold: text (input, output, reference, error)
and identifiers (request ids, names, labels, feature keys) are cut to their cap and counted.

Windows and the label join keep events by count; these caps make that count a bound in bytes.
Applied in ingest, before any sink, so every consumer of an event sees the same capped event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from daemon.events import ChatMessage, Event, FeedbackEvent, InferenceEvent

Count = Callable[[str], None]


def cut(value: str, limit: int) -> str:
    """``value`` cut to at most ``limit`` UTF-8 bytes, never inside a character."""
    if len(value) * 4 <= limit:  # no string of these many characters can be longer
        return value
    raw = value.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return value
    return raw[:limit].decode("utf-8", "ignore")


class FieldLimits:
    def __init__(self, text_bytes: int, id_bytes: int, max_fields: int, count: Count) -> None:
        self.text_bytes = text_bytes
        self.id_bytes = id_bytes
        self.max_fields = max_fields
        self.count = count

    def apply(self, event: Event) -> Event:
        if type(event) is InferenceEvent:
            return self._inference(event)
        assert type(event) is FeedbackEvent
        return self._feedback(event)

    def _str(self, changes: dict[str, object], name: str, value: str | None, limit: int,
             counted: bool = True) -> None:
        if value is not None:
            capped = cut(value, limit)
            if capped is not value:
                changes[name] = capped
                if counted:
                    self.count(name)

    def _inference(self, event: InferenceEvent) -> Event:
        changes: dict[str, object] = {}
        ids, text = self.id_bytes, self.text_bytes
        self._str(changes, "request_id", event.request_id, ids)
        self._str(changes, "model", event.model, ids)
        self._str(changes, "model_version", event.model_version, ids)
        self._str(changes, "replica", event.replica, ids)
        self._str(changes, "error", event.error, text)
        features = event.input
        if features is not None:
            capped_input = self._mapping(features, "input", text)
            if capped_input is not features:
                changes["input"] = capped_input
        params = event.params
        if params is not None:
            capped_params = self._mapping(params, "params", ids)
            if capped_params is not params:
                changes["params"] = capped_params
        output = event.output
        if output is not None:
            out: dict[str, object] = {}
            self._str(out, "text", output.text, text, counted=False)
            if isinstance(output.label, str):
                self._str(out, "label", output.label, ids, counted=False)
            self._str(out, "finish_reason", output.finish_reason, ids, counted=False)
            if out:
                for name in out:
                    self.count(f"output.{name}")
                changes["output"] = msgspec.structs.replace(output, **out)
        return msgspec.structs.replace(event, **changes) if changes else event

    def _mapping(self, values: dict[str, Any], where: str, limit: int) -> dict[str, Any]:
        """Flat inputs or params: at most max_fields keys, keys and strings cut, lists (chat
        messages, stop words) at most max_fields long, the latest kept."""
        keys, chars = self.id_bytes // 4, limit // 4
        if len(values) <= self.max_fields and all(
                len(k) <= keys and (type(v) is not str or len(v) <= chars)
                and type(v) is not list for k, v in values.items()):
            return values  # the common case: nothing could be over a cap
        changed = False
        if len(values) > self.max_fields:
            self.count(f"{where}.fields")
            values = dict(list(values.items())[: self.max_fields])
            changed = True
        out: dict[str, Any] = {}
        for key, value in values.items():
            capped_key = cut(key, self.id_bytes)
            if capped_key is not key:
                self.count(f"{where}.key")
                changed = True
            if isinstance(value, str):
                capped = cut(value, limit)
                if capped is not value:
                    self.count(f"{where}.text" if key == "text" else f"{where}.value")
                    value, changed = capped, True
            elif isinstance(value, list):
                items = self._items(value, f"{where}.{capped_key}", limit)
                changed = changed or items is not value
                value = items
            out[capped_key] = value
        return out if changed else values

    def _items(self, items: list[Any], where: str, limit: int) -> list[Any]:
        kept = items
        if len(items) > self.max_fields:
            self.count(f"{where}.items")
            kept = items[-self.max_fields:]
        capped_items = []
        for item in kept:
            if isinstance(item, ChatMessage) and item.content is not None:
                content = cut(item.content, self.text_bytes)
                if content is not item.content:
                    self.count(f"{where}.content")
                    item = msgspec.structs.replace(item, content=content)
            elif isinstance(item, str):
                capped = cut(item, limit)
                if capped is not item:
                    self.count(f"{where}.value")
                    item = capped
            capped_items.append(item)
        if kept is items and all(a is b for a, b in zip(capped_items, items, strict=True)):
            return items
        return capped_items

    def _feedback(self, event: FeedbackEvent) -> Event:
        changes: dict[str, object] = {}
        self._str(changes, "request_id", event.request_id, self.id_bytes)
        self._str(changes, "model", event.model, self.id_bytes)
        self._str(changes, "reference", event.reference, self.text_bytes)
        if isinstance(event.label, str):
            self._str(changes, "label", event.label, self.id_bytes)
        return msgspec.structs.replace(event, **changes) if changes else event
