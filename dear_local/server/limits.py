"""ASGI middleware that refuses request bodies over a size limit with 413.

The body is read here, counted as it arrives (so a missing or lying
``Content-Length`` does not get past it), and replayed to the app. After the
body, ``receive`` goes straight to the server again, so the app can still
notice a client that disconnects.
"""

from __future__ import annotations

import json

DRAIN_FACTOR = 4  # read (and discard) up to this many times the limit before answering 413


class BodySizeLimit:
    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes * DRAIN_FACTOR:
            await self._reject(send, declared)
            return
        chunks: list[bytes] = []
        size = 0
        first: dict | None = None
        while True:
            message = await receive()
            if message["type"] != "http.request":
                first = message  # the client left before sending the whole body
                break
            body = message.get("body", b"")
            size += len(body)
            if size <= self.max_bytes:
                chunks.append(body)
            elif size > self.max_bytes * DRAIN_FACTOR:
                break
            if not message.get("more_body", False):
                break
        if size > self.max_bytes:
            await self._reject(send, size)
            return
        if first is None:
            first = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        pending: list[dict] = [first]

        async def replay():
            if pending:
                return pending.pop()
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send, size: int) -> None:
        body = json.dumps({
            "error": "body_too_large",
            "message": f"the request body is {size} bytes, more than the server's limit of {self.max_bytes}; "
            "send fewer or shorter documents, or start the server with a larger --max-body-bytes",
        }).encode()
        await send({
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        })
        await send({"type": "http.response.body", "body": body})


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
