"""Keep secrets out of everything dear-local prints: reports, logs and error messages.

A secret is any value of a setting whose name says it is one (``DEAR_LOCAL_API_KEY``,
``DEAR_LOCAL_SERVER_API_KEY``, ``HF_TOKEN``, ``*_PASSWORD`` ...), a key passed on the command
line, and the password (or lone token) inside a URL such as ``http://admin:hunter2@host``.
Every error the CLI prints goes through :func:`redact`, and ``dear-local env`` reports settings
through :func:`redact_settings`, so ``env`` output can be pasted into a bug report.
"""

from __future__ import annotations

import os
import re
from typing import Iterable, Mapping

MASK = "***"

# A name part that marks a secret: API_KEY, APIKEY, HF_TOKEN, DB_PASSWORD, CLIENT_SECRET ...
_SECRET_PART = re.compile(
    r"(KEYS?|TOKENS?|SECRETS?|PASSWORDS?|PASSWD|PWD|PASS|CREDENTIALS?|AUTH|AUTHORIZATION|COOKIES?|SESSION)$"
)
# Values this short are not masked inside free text: masking "a" would mangle every message.
_MIN_SECRET_LEN = 4

# scheme://user:password@host or scheme://token@host
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#@\s]*)@")
# ?api_key=...&token=... in a URL's query
_URL_QUERY_SECRET = re.compile(r"(?P<name>[?&;][^=&;#\s]*)=(?P<value>[^&;#\s]*)")


# Shell variables whose names end like a secret's but hold the working directory.
_NOT_SECRET = frozenset({"PWD", "OLDPWD"})


def is_secret_name(name: str) -> bool:
    """Whether a setting called ``name`` holds a secret (case-insensitive, by its parts)."""
    if name.upper() in _NOT_SECRET:
        return False
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", name.upper()) if p]
    return any(_SECRET_PART.search(p) for p in parts)


def redact_url(text: str) -> str:
    """``text`` with every URL's password (or lone user token) and secret query values masked.

    ``http://admin:hunter2@h:1/x`` becomes ``http://admin:***@h:1/x``;
    ``http://tok@h`` becomes ``http://***@h``; ``?api_key=abc`` becomes ``?api_key=***``.
    """

    def userinfo(m: re.Match) -> str:
        user, sep, _ = m.group("userinfo").partition(":")
        return f"{m.group('scheme')}{user}:{MASK}@" if sep else f"{m.group('scheme')}{MASK}@"

    def query(m: re.Match) -> str:
        name = m.group("name")
        return f"{name}={MASK}" if is_secret_name(name[1:]) and m.group("value") else m.group(0)

    text = _URL_USERINFO.sub(userinfo, text)
    if "://" in text:
        text = _URL_QUERY_SECRET.sub(query, text)
    return text


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """The values of every secret-like setting in ``environ`` (default: ``os.environ``)."""
    env = os.environ if environ is None else environ
    return [v for k, v in env.items() if v and is_secret_name(k)]


def redact(text: str, secrets: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> str:
    """``text`` with URL credentials, ``secrets`` and the environment's secret values masked.

    Longer secrets are masked first, so a secret that contains another is masked whole.
    """
    values = {s for s in (*secrets, *secret_values(environ)) if s and len(s) >= _MIN_SECRET_LEN}
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, MASK)
    return redact_url(text)


def redact_settings(settings: Mapping[str, str]) -> dict[str, str]:
    """``settings`` as safe to print: a secret-like name shows ``***`` (``(empty)`` when unset),
    any other value has its URL credentials masked."""
    out = {}
    for name, value in settings.items():
        if is_secret_name(name):
            out[name] = f"{MASK} (set)" if value else "(empty)"
        else:
            out[name] = redact(value)
    return out
