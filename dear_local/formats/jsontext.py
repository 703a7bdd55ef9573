"""JSON from untrusted text, every failure one ``UserInputError`` line.

``json.loads`` fails in three ways on hostile input: malformed text (``JSONDecodeError``),
arrays or objects nested thousands of levels deep (``RecursionError``), and an integer of more
than 4,300 digits (``ValueError``). :func:`loads` turns each into a line that names the input.
"""

from __future__ import annotations

import json

from ..errors import UserInputError


def loads(text: str | bytes, where: str, *, position: bool = False) -> object:
    """``json.loads(text)``; raises ``UserInputError`` naming ``where`` (e.g. ``"FILE line 3"``).

    ``position`` adds the line and column of a syntax error (for a whole file).
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserInputError(f"{where} is not valid JSON: {exc if position else exc.msg}") from None
    except RecursionError:
        raise UserInputError(
            f"{where} is nested too deeply to read (arrays or objects inside each other thousands of "
            "levels deep); flatten it"
        ) from None
    except ValueError:  # an integer with more digits than Python converts
        raise UserInputError(
            f"{where} holds a number too long to read (more digits than Python converts, {_digit_limit()}); "
            "write long ids as strings"
        ) from None


def _digit_limit() -> str:
    import sys

    limit = getattr(sys, "get_int_max_str_digits", lambda: 4300)()
    return f"{limit}" if limit else "no limit"
