"""Forgiving paths: a base URL with a trailing slash, or a path with a doubled one, reaches its route.

Clients build the endpoint by joining a base URL the user typed with ``/rerank`` or ``/v1/rerank``,
so ``http://host:8080/`` gives ``//rerank``, and a path ending in ``/`` gives ``/v1/rerank/``.
Starlette would answer 404 to the first and a 307 redirect to the second, which clients that do
not follow redirects for a POST (httpx's default) take as a failure. :class:`ForgivingPaths`
collapses runs of slashes and drops a trailing one before routing, so both reach ``/rerank`` and
``/v1/rerank``; every other path is routed as sent.
"""

from __future__ import annotations

import re

_SLASHES = re.compile(r"/{2,}")


def normalize(path: str) -> str:
    """``//v1//rerank/`` -> ``/v1/rerank``; ``/`` stays ``/``."""
    path = _SLASHES.sub("/", path)
    return path.rstrip("/") or "/"


class ForgivingPaths:
    """ASGI middleware: routes each HTTP request by :func:`normalize` of its path."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            path = scope.get("path", "")
            fixed = normalize(path)
            if fixed != path:
                scope = {**scope, "path": fixed, "raw_path": fixed.encode("latin-1", "replace")}
        await self.app(scope, receive, send)
