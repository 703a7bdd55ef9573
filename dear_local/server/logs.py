"""Keep secrets out of the server's logs: uvicorn's access and error logs and dear-local's own.

A filter on every handler of uvicorn's loggers masks, in each record's message, arguments
and traceback: the server's API key (in every spelling a log line can hold it), every
secret-like setting in the environment (such as DEAR_LOCAL_SERVER_API_KEY), credentials in URLs, and secret-named query parameters in a
request path (``/v1/rerank?api_key=...``, which the access log would otherwise show).
"""

from __future__ import annotations

import logging
import re
from typing import Iterable
from urllib.parse import quote, quote_plus

from ..redact import MASK, is_secret_name, redact

LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "dear_local")
# name=value in a path's query string, as in redact_url but without needing a scheme in front
_QUERY_PARAM = re.compile(r"(?P<name>[?&;][^=&;#\s]*)=(?P<value>[^&;#\s]*)")


def redact_path(text: str) -> str:
    """``text`` with the values of secret-named query parameters masked (``?token=abc`` to ``?token=***``)."""

    def param(m: re.Match) -> str:
        return f"{m.group('name')}={MASK}" if is_secret_name(m.group("name")[1:]) and m.group("value") else m.group(0)

    return _QUERY_PARAM.sub(param, text) if "?" in text else text


def spellings(secret: str) -> set[str]:
    """The ways a log line can spell ``secret``: as is, percent-encoded (a request path or query in the
    access log) and as the repr of its UTF-8 bytes (headers in uvicorn's ``--log-level trace`` lines)."""
    try:
        raw = secret.encode("utf-8")
    except UnicodeEncodeError:
        return {secret}
    return {secret, quote(secret), quote(secret, safe=""), quote_plus(secret), repr(raw)[2:-1]}


class RedactSecrets(logging.Filter):
    """Masks secrets in every record it sees (it never drops one)."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        self.secrets = sorted({v for s in secrets if s for v in spellings(s)}, key=len, reverse=True)

    def clean(self, text: str) -> str:
        return redact_path(redact(text, self.secrets))

    def _arg(self, value):
        if value is None or isinstance(value, (bool, int, float)):
            return value
        return self.clean(str(value))

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.clean(str(record.msg))
        if isinstance(record.args, tuple):
            record.args = tuple(self._arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: self._arg(v) for k, v in record.args.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = self.clean(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = self.clean(record.exc_text)
        if getattr(record, "color_message", None):  # uvicorn's coloured copy of the message
            record.color_message = self.clean(str(record.color_message))
        return True


def install(secrets: Iterable[str | None] = ()) -> RedactSecrets:
    """Add a :class:`RedactSecrets` to every handler of uvicorn's and dear-local's loggers and to
    Python's last-resort handler (which prints warnings when no logging is configured)."""
    redactor = RedactSecrets(secrets)
    handlers = {h for name in LOGGERS for h in logging.getLogger(name).handlers}
    handlers |= set(logging.getLogger().handlers)
    if logging.lastResort is not None:
        handlers.add(logging.lastResort)
    for handler in handlers:
        for old in [f for f in handler.filters if isinstance(f, RedactSecrets)]:
            handler.removeFilter(old)
        handler.addFilter(redactor)
    return redactor
