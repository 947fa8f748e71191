"""ASGI middleware every HTTP server of the project shares (the daemon's API, the replica):
a request body over a cap is answered 413 before any handler reads it."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from lifeguard.errors import LifeguardError

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Message, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 64 * 1024


class _TooLarge(LifeguardError):
    """A body grew past the limit while being read (answered 413, never raised further)."""


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413, whether its
    Content-Length says so up front or a chunked body grows past it while being read."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        try:
            too_large = declared is not None and int(declared) > self.limit
        except ValueError:
            await _answer(send, 400, "invalid Content-Length")
            return
        if too_large:
            await _answer(send, 413, f"request body over {self.limit} bytes")
            return
        seen = 0
        started = False

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracked)
        except _TooLarge:
            if not started:
                await _answer(send, 413, f"request body over {self.limit} bytes")


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


