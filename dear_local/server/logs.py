"""Keep secrets out of the server's logs: uvicorn's access and error logs and dear-local's own.

A filter on every handler of uvicorn's loggers masks, in each record's message, arguments
and traceback: the server's API key (in every spelling a log line can hold it), every
secret-like setting in the environment (such as DEAR_LOCAL_SERVER_API_KEY), credentials in URLs, and secret-named query parameters in a
request path (``/v1/rerank?api_key=...``, which the access log would otherwise show). The key is
found in any spelling: raw, percent-encoded in either hex case or any mix, or as a bytes repr.
Control characters in every record (a server's reply, a request path) are shown as visible escapes
(:func:`~dear_local.terminal.printable`), so a log line cannot drive the terminal.
"""

from __future__ import annotations

import logging
import re
from typing import Iterable
from urllib.parse import unquote

from ..redact import MASK, is_secret_name, redact
from ..terminal import printable

LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "dear_local")
# name=value in a path's query string, as in redact_url but without needing a scheme in front
_QUERY_PARAM = re.compile(r"(?P<name>[?&;][^=&;#\s]*)=(?P<value>[^&;#\s]*)")


def redact_path(text: str) -> str:
    """``text`` with the values of secret-named query parameters masked (``?token=abc`` to ``?token=***``;
    a percent-encoded name such as ``api%5Fkey`` counts by its decoded form)."""

    def param(m: re.Match) -> str:
        secret = is_secret_name(unquote(m.group("name")[1:]))
        return f"{m.group('name')}={MASK}" if secret and m.group("value") else m.group(0)

    return _QUERY_PARAM.sub(param, text) if "?" in text else text


def _char_pattern(char: str) -> str:
    """A pattern for ``char`` as a log line can spell it: as is, or percent-encoded (either case of hex,
    ``+`` for a space in a query), or as the ``\\xNN`` escapes of a bytes repr."""
    data = char.encode("utf-8", "surrogatepass")
    encoded = "".join(f"%(?i:{b:02x})" for b in data)
    escaped = "".join(re.escape(f"\\x{b:02x}") for b in data)
    options = [re.escape(char), encoded, escaped]
    if char == " ":
        options.append(r"\+")
    return "(?:" + "|".join(options) + ")"


def spelling_pattern(secret: str) -> re.Pattern:
    """A pattern matching ``secret`` in any spelling a log line can hold: as is, percent-encoded in any
    mix of characters and hex case (a request path or query in the access log), or as the repr of its
    UTF-8 bytes (headers in uvicorn's ``--log-level trace`` lines)."""
    return re.compile("".join(_char_pattern(c) for c in secret))


class RedactSecrets(logging.Filter):
    """Masks secrets in every record it sees, and shows control characters as visible escapes so a logged
    server reply or request path cannot drive the terminal (it never drops a record)."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._patterns = [spelling_pattern(s) for s in self.secrets if len(s) >= 4]

    def clean(self, text: str, *, keep_newlines: bool = True) -> str:
        for pattern in self._patterns:
            text = pattern.sub(MASK, text)
        return printable(redact_path(redact(text, self.secrets)), keep_newlines=keep_newlines)

    def _arg(self, value):
        if value is None or isinstance(value, (bool, int, float)):
            return value
        return self.clean(str(value), keep_newlines=False)

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
        if getattr(record, "color_message", None):  # uvicorn's coloured copy of the message: its own colours stay
            record.color_message = redact_path(redact(str(record.color_message), self.secrets))
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
