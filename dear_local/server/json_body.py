"""ASGI middleware: a request body is read as JSON whatever its ``Content-Type`` says.

Clients are sloppy: ``curl -d`` sends ``application/x-www-form-urlencoded``, some HTTP
libraries send ``text/plain`` or no type at all. This API takes nothing but JSON, so the
body is parsed as JSON in every case; one that does not parse gets 400 saying to send JSON
with ``Content-Type: application/json``. (FastAPI would otherwise hand the raw bytes to
validation, which answers an unhelpful 422 "Input should be a valid dictionary".)

JSON that is well formed but that Python cannot read (arrays or objects nested thousands of
levels deep, an integer of more than 4,300 digits) would reach FastAPI as an unreadable body
and be answered "could not be read as UTF-8 JSON text", which is not what is wrong; such a
body gets a 400 here that says what is (see :func:`unreadable_reason`).
"""

from __future__ import annotations

import json

JSON = b"application/json"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def unreadable_reason(body: bytes) -> str | None:
    """Why a UTF-8 JSON ``body`` cannot be read though it is well formed, or None.

    None too for a body that is not UTF-8 or not JSON at all: FastAPI names those itself.
    """
    try:
        json.loads(body)
    except RecursionError:
        return "it is nested too deeply (arrays or objects inside each other thousands of levels deep)"
    except UnicodeDecodeError:
        return None
    except json.JSONDecodeError:
        return None
    except ValueError:  # an integer with more digits than Python converts
        return "it holds a number too long to read (thousands of digits); send long ids as strings"
    return None


class JsonBodies:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope.get("method") in _BODY_METHODS:
            headers = [(name, value) for name, value in scope.get("headers", []) if name.lower() != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", JSON)]}
            first = await receive()  # BodySizeLimit, outside this one, hands the whole body at once
            if first.get("type") == "http.request" and not first.get("more_body", False):
                reason = unreadable_reason(first.get("body", b""))
                if reason is not None:
                    await _bad_request(send, f"the body is JSON that cannot be read: {reason}")
                    return
            pending = [first]

            async def replay():
                return pending.pop() if pending else await receive()

            await self.app(scope, replay, send)
            return
        await self.app(scope, receive, send)


async def _bad_request(send, message: str) -> None:
    body = json.dumps({"error": "invalid_json", "message": message}).encode()
    await send({"type": "http.response.start", "status": 400,
                "headers": [(b"content-type", JSON), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
