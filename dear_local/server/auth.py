"""The API key check: ``Authorization: Bearer <key>``, compared as bytes in constant time.

HTTP header values are bytes. Starlette hands them to Python as text decoded as latin-1,
so a key with any non-ASCII character, compared as UTF-8 text, could never match. Here the
raw header bytes are compared with the UTF-8 bytes of the configured key, the encoding every
client that can send such a key uses (curl sends what the terminal gives it, UTF-8).
Keys no header can carry (control characters, whitespace at the ends) are refused at
start-up by :func:`.config.check_api_key`, so everything that passes can authenticate.
"""

from __future__ import annotations

import hmac

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from ..settings import ENV_API_KEY
from .service import ApiError

# Documents the scheme in the OpenAPI schema; its own parse of the header (text, stripped
# of Unicode whitespace) is not used for the check.
_bearer = HTTPBearer(auto_error=False, description="The server's API key, as `Authorization: Bearer <key>`.")


def bearer_token(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The raw bytes after ``Bearer`` in the one ``Authorization`` header of an ASGI scope, else None.

    None when the header is missing, repeated, or not of the Bearer scheme (case-insensitive).
    Spaces and tabs around the token are not part of it (HTTP strips them from header values).
    """
    values = [value for name, value in headers if name.lower() == b"authorization"]
    if len(values) != 1:
        return None
    scheme, _, token = values[0].strip(b" \t").partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    return token.strip(b" \t")


def require_key(key: str):
    """A FastAPI dependency that answers 401 unless the request carries ``key`` as its Bearer token."""
    expected = key.encode("utf-8")

    async def check(request: Request, _documented=Depends(_bearer)) -> None:
        given = bearer_token(request.scope.get("headers") or [])
        # compare_digest on equal-type bytes takes the same time wherever the first difference is.
        if given is None or not hmac.compare_digest(given, expected):
            raise ApiError(
                401, "unauthorized",
                "this server needs an API key: send the header 'Authorization: Bearer <key>' with the key "
                f"it was started with (--api-key or {ENV_API_KEY})",
                {"WWW-Authenticate": "Bearer"},
            )

    return check
