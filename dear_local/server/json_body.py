"""ASGI middleware: a request body is read as JSON whatever its ``Content-Type`` says.

Clients are sloppy: ``curl -d`` sends ``application/x-www-form-urlencoded``, some HTTP
libraries send ``text/plain`` or no type at all. This API takes nothing but JSON, so the
body is parsed as JSON in every case; one that does not parse gets 400 saying to send JSON
with ``Content-Type: application/json``. (FastAPI would otherwise hand the raw bytes to
validation, which answers an unhelpful 422 "Input should be a valid dictionary".)
"""

from __future__ import annotations

JSON = b"application/json"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class JsonBodies:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope.get("method") in _BODY_METHODS:
            headers = [(name, value) for name, value in scope.get("headers", []) if name.lower() != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", JSON)]}
        await self.app(scope, receive, send)
