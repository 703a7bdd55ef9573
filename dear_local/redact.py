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

# A name part that marks a secret: API_KEY, APIKEY, HF_TOKEN, DB_PASSWORD, CLIENT_SECRET, X-Amz-Signature ...
_SECRET_PART = re.compile(
    r"(KEYS?|TOKENS?|SECRETS?|PASSWORDS?|PASSWD|PWD|PASS|PASSPHRASES?|CREDENTIALS?|CREDS?|AUTH|AUTHORIZATION"
    r"|COOKIES?|SESSION|BEARER|SIGS?|SIGNATURES?|JWT|OTP)$"
)
# Whole query/fragment parameter names that carry a secret though no part says so (OAuth's ``code``).
_SECRET_PARAMS = frozenset({"code", "tok"})
# Values this short are not masked inside free text: masking "a" would mangle every message.
# Where a secret stands as a whole value (a URL password, a Bearer token, a setting) it is masked whatever its length.
_MIN_SECRET_LEN = 4

# scheme:// then the userinfo, which runs to the LAST "@" of the URL (a password may hold "@", "/", "?",
# "#" and spaces): the last "@" on the line before the next "scheme://" and, when the URL is quoted,
# before its closing quote. Passwords are masked generously: a URL whose path holds "@" loses more.
_URL_START = re.compile(r"(?<![A-Za-z0-9+.\-:/@%])[A-Za-z][A-Za-z0-9+.\-]*://")  # "pw://" inside a password is not one
# name=value in a URL's query or fragment: ?api_key=...&sig=...#access_token=...
_URL_PARAM = re.compile(r"(?P<name>[?&;#][^=&;#?\s]*)=(?P<value>[^&;#\s'\"]*)")
# Credentials inside any text: an Authorization header's value, a Bearer token, HTTP basic credentials.
_AUTH_SCHEMES = r"bearer|basic|digest|token|negotiate|apikey|aws4-hmac-sha256"
_AUTH_HEADER = re.compile(
    rf"(?i)(?P<name>\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)(?:(?P<scheme>{_AUTH_SCHEMES})\s+)?"
    rf"(?P<value>(?!<|\*\*\*|(?:{_AUTH_SCHEMES})\b)[^\s\"',;]+)"
)
_BEARER = re.compile(r"(?i)(?P<name>\bbearer\s+)(?P<value>(?!\*\*\*|<|token\b)[^\s\"',;]+)")
_BASIC = re.compile(r"(?i)(?P<name>\bbasic\s+)(?P<value>[A-Za-z0-9+/_\-]{2,}={0,2})")


# Shell variables whose names end like a secret's but hold the working directory.
_NOT_SECRET = frozenset({"PWD", "OLDPWD"})


def is_secret_name(name: str) -> bool:
    """Whether a setting or URL parameter called ``name`` holds a secret (case-insensitive, by its parts)."""
    if name.upper() in _NOT_SECRET:
        return False
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", name.upper()) if p]
    return any(_SECRET_PART.search(p) for p in parts)


def _is_secret_param(name: str) -> bool:
    from urllib.parse import unquote

    name = unquote(name)
    return name.lower() in _SECRET_PARAMS or is_secret_name(name)


def _url_end(text: str, start: int) -> int:
    """Where the URL starting at ``start`` (just after ``scheme://``) can end at the latest: the line's
    end, the next ``scheme://``, or the closing quote when the URL is quoted."""
    end = len(text)
    for stop in ("\n", "\r"):
        i = text.find(stop, start)
        if i != -1:
            end = min(end, i)
    nxt = _URL_START.search(text, start, end)
    if nxt:
        end = nxt.start()
    return end


# In unquoted text a password may hold spaces, but the userinfo does not run on across a sentence:
# at most two runs of spaces, and none after ",", ";" or "." (unless the URL is the whole line).
_TOO_FAR = re.compile(r"[,;.]\s|\s+\S+\s+\S+\s+")


def _userinfo_end(text: str, start: int, quote: str | None, whole_line: bool = False) -> int:
    """Index of the "@" that ends the userinfo of a URL whose authority starts at ``start``, or -1.
    ``whole_line``: the URL starts its line, so a line that ends at its host is all URL."""
    end = _url_end(text, start)
    if quote:
        q = start
        while True:
            q = text.find(quote, q, end)
            if q == -1:
                break
            if text[q - 1] != "\\":
                return text.rfind("@", start, q)
            q += 1
    at = text.rfind("@", start, end)
    if at != -1 and whole_line and not any(c.isspace() for c in text[at:end]):
        return at
    while at != -1 and _TOO_FAR.search(text, start, at):
        at = text.rfind("@", start, at)
    return at


def _mask_userinfo(text: str) -> str:
    out, pos = [], 0
    for m in _URL_START.finditer(text):
        if m.start() < pos:
            continue
        start = m.end()
        before = text[m.start() - 1] if m.start() > 0 else ""
        at = _userinfo_end(text, start, before if before in "'\"" and before else None,
                           whole_line=before in ("", "\n", "\r"))
        if at == -1:
            continue
        user, sep, _ = text[start:at].partition(":")
        out.append(text[pos:start])
        out.append(f"{user}:{MASK}@" if sep else f"{MASK}@")
        pos = at + 1
    out.append(text[pos:])
    return "".join(out)


def redact_url(text: str) -> str:
    """``text`` with every URL's password (or lone user token), secret parameters and credentials masked.

    ``http://admin:hunter2@h:1/x`` becomes ``http://admin:***@h:1/x`` (the password runs to the URL's
    last ``@``, so ``p@ss word`` is masked whole); ``http://tok@h`` becomes ``http://***@h``;
    ``?api_key=abc``, ``&X-Amz-Signature=..`` and ``#access_token=..`` become ``=***``; ``Bearer abc``,
    ``Basic dXNlcjpwdw==`` and ``Authorization: xyz`` show ``***`` for the credential.
    """

    def param(m: re.Match) -> str:
        name = m.group("name")
        return f"{name}={MASK}" if m.group("value") and _is_secret_param(name[1:]) else m.group(0)

    def header(m: re.Match) -> str:
        scheme = m.group("scheme")
        return f"{m.group('name')}{scheme + ' ' if scheme else ''}{MASK}"

    if "://" in text:
        text = _mask_userinfo(text)
    if "=" in text and ("?" in text or "#" in text):
        text = _URL_PARAM.sub(param, text)
    text = _AUTH_HEADER.sub(header, text)
    text = _BEARER.sub(lambda m: f"{m.group('name')}{MASK}", text)
    text = _BASIC.sub(lambda m: f"{m.group('name')}{MASK}" if _looks_basic(m.group("value")) else m.group(0), text)
    return text


def _looks_basic(value: str) -> bool:
    """Whether ``value`` is base64 of ``user:password`` (HTTP basic credentials)."""
    import base64
    import binascii

    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=False)
    except (binascii.Error, ValueError):
        return False
    return b":" in decoded


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """The values of every secret-like setting in ``environ`` (default: ``os.environ``)."""
    env = os.environ if environ is None else environ
    return [v for k, v in env.items() if v and is_secret_name(k)]


# Secrets the process holds that no setting names: a --server URL's password and its HTTP basic form,
# an --api-key and its Bearer header. Every later call of redact() masks them too.
_REGISTERED: set[str] = set()


def register_secrets(*values: str | None) -> None:
    """Have every later :func:`redact` mask ``values`` (empty ones are ignored)."""
    _REGISTERED.update(v for v in values if v)


def redact(text: str, secrets: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> str:
    """``text`` with URL credentials, ``secrets``, registered secrets and the environment's secret values masked.

    Values shorter than 4 characters are masked only where they stand as a whole value (a URL's password,
    a Bearer token, a setting), never in free text. Longer secrets are masked first, so a secret that
    contains another is masked whole.
    """
    values = {s for s in (*secrets, *_REGISTERED, *secret_values(environ)) if s and len(s) >= _MIN_SECRET_LEN}
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
