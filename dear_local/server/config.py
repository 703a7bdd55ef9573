"""Settings for ``dear-local serve``: what to load and how the server protects itself.

This module imports nothing from FastAPI, so the CLI can build and check the
settings before it loads the ``serve`` extra.
"""

from __future__ import annotations

import ipaddress
import math
import unicodedata
from dataclasses import dataclass, field

from ..errors import UserInputError
from ..limits import MAX_BODY_BYTES, MAX_DOCUMENTS, MAX_IN_FLIGHT, MAX_QUEUE
from ..limits import MAX_SERVE_TIMEOUT as MAX_TIMEOUT
from ..run_options import RunOptions
from ..settings import (  # noqa: F401 - the defaults live in settings, kept importable from here
    DEFAULT_HOST,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_QUEUE,
    DEFAULT_PORT,
    DEFAULT_TIMEOUT,
    ENV_API_KEY,
)


@dataclass(frozen=True)
class ServerSettings:
    """Everything ``create_app`` needs.

    - ``model``: a ``.gguf`` path or ``NAME[:QUANT]`` from the model store (None with a first stage alone).
    - ``run``: profile overrides, llama.cpp and server settings, as for ``Reranker``: one
      :class:`~dear_local.run_options.RunOptions`, the same declaration ``rerank`` uses.
    - ``api_key``: when set, every rerank and models request needs ``Authorization: Bearer <key>``.
    - ``max_queue``: requests allowed to wait behind the one being ranked; more get 429.
    - ``timeout``: seconds a request may take, waiting included, before it gets 504.
    - ``deadline``: seconds after which a request is answered with the ranking as far as it got
      (see :mod:`.deadlines`); None: no deadline unless a request sends ``X-Deadline``. At most ``timeout``.
    - ``max_documents``: documents allowed in one request (at most the library's 1000).
    - ``max_body_bytes``: request bodies above this get 413.
    - ``in_flight``: requests ranked at once; more than 1 only with a server backend
      (``run.servers``), since a local llama.cpp model runs one request at a time.
    """

    model: str | None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_key: str | None = field(default=None, repr=False)  # never shown, not even in a repr
    max_queue: int = DEFAULT_MAX_QUEUE
    timeout: float = DEFAULT_TIMEOUT
    max_documents: int = MAX_DOCUMENTS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    run: RunOptions = RunOptions()
    in_flight: int = 1
    deadline: float | None = None

    def __post_init__(self) -> None:
        if self.api_key is not None:
            check_api_key(self.api_key)
        if self.in_flight < 1:
            raise UserInputError(f"--in-flight must be at least 1, got {self.in_flight}")
        if self.in_flight > MAX_IN_FLIGHT:
            raise UserInputError(f"--in-flight must be at most {MAX_IN_FLIGHT}, got {self.in_flight}")
        if self.in_flight > 1 and not self.run.servers:
            raise UserInputError("--in-flight above 1 needs --server: a local model ranks one request at a time")
        if not 0 <= self.max_queue <= MAX_QUEUE:
            raise UserInputError(f"--max-queue must be between 0 and {MAX_QUEUE}, got {self.max_queue}")
        if not 0 < self.timeout <= MAX_TIMEOUT:
            raise UserInputError(f"--timeout must be more than 0 and at most {MAX_TIMEOUT:g} seconds, got {self.timeout}")
        if self.deadline is not None and not (math.isfinite(self.deadline) and 0 < self.deadline <= self.timeout):
            raise UserInputError(
                f"--deadline must be more than 0 and at most --timeout ({self.timeout:g} seconds), got {self.deadline}"
            )
        if not 1 <= self.max_documents <= MAX_DOCUMENTS:
            raise UserInputError(
                f"--max-documents must be between 1 and {MAX_DOCUMENTS}, got {self.max_documents}"
            )
        if not 1024 <= self.max_body_bytes <= MAX_BODY_BYTES:
            raise UserInputError(f"--max-body-bytes must be between 1024 and {MAX_BODY_BYTES}, got {self.max_body_bytes}")
        if not 0 <= self.port <= 65535:
            raise UserInputError(f"--port must be between 0 and 65535, got {self.port}")

    @property
    def model_name(self) -> str:
        """The name the API reports for the served model (the file name for a path)."""
        name = str(self.model or self.run.first_stage).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        return name[: -len(".gguf")] if name.endswith(".gguf") else name


def check_api_key(key: str) -> None:
    """Refuse, with one line that never shows the key, a key no HTTP client can send back.

    The server compares the key's UTF-8 bytes with the raw bytes of the ``Authorization``
    header (see :mod:`.auth`), so any Unicode key works for a client that sends UTF-8
    (curl does; Python's httpx needs the header as bytes). Refused at start-up:

    - lone surrogates (a command-line argument that was not valid UTF-8): no bytes to compare;
    - control characters (C0, DEL, C1; tabs and newlines included): HTTP servers refuse or
      cut header values holding them, and a pasted key rarely means them;
    - whitespace at either end: HTTP strips it from header values, so it could never match;
    - an empty key, which would quietly serve without one.

    Raises ``UserInputError`` naming --api-key and DEAR_LOCAL_API_KEY.
    """
    where = f"the API key (--api-key or {ENV_API_KEY})"
    if not key:
        raise UserInputError(
            f"{where} is empty, which would serve without a key; pass a non-empty key, or leave --api-key out"
        )
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise UserInputError(f"{where} is not valid UTF-8 text; set a key of printable characters") from None
    if any(unicodedata.category(c) == "Cc" for c in key):
        raise UserInputError(
            f"{where} holds a control character (such as a tab or newline), which an HTTP header cannot "
            "carry; set a key of printable characters"
        )
    if key[0].isspace() or key[-1].isspace():
        raise UserInputError(
            f"{where} starts or ends with whitespace, which HTTP strips from headers, so no request could "
            "match it; remove the surrounding whitespace"
        )


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_warning(host: str, api_key: str | None) -> str | None:
    """The warning to print when the server is reachable from other machines without a key."""
    if api_key or is_loopback(host):
        return None
    return (
        f"serving on {host} without an API key: anyone who can reach this address can use the model; "
        f"pass --api-key (or set {ENV_API_KEY}), or bind 127.0.0.1"
    )
