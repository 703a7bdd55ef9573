"""Every line the CLI writes to stderr (errors, warnings, notes) goes through :func:`safe`.

Messages quote untrusted things: qids, docids, file names, server URLs and replies. ``safe``
masks secrets and URL credentials (:mod:`dear_local.redact`) and shows control characters and
escape sequences as visible escapes (:mod:`dear_local.terminal`), so no message can leak a key or
drive the terminal.
"""

from __future__ import annotations

import typer

from ..redact import redact
from ..terminal import printable


def safe(message: str) -> str:
    """``message`` as printed, on one line: secrets masked, control characters (line breaks
    included) escaped."""
    return printable(redact(message))


def shorten(message: str, limit: int = 400) -> str:
    """``message`` with its whitespace runs made single spaces, cut to ``limit`` characters with an
    ellipsis (a value pasted by mistake into an option can be huge)."""
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 1] + "\u2026"


def warn(message: str) -> None:
    """``warning: MESSAGE`` on stderr."""
    typer.echo(f"warning: {safe(message)}", err=True)


def note(message: str) -> None:
    """``MESSAGE`` on stderr (progress notes such as "resuming ...")."""
    typer.echo(safe(message), err=True)
