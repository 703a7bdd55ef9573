"""Query and document ids: which JSON values are ids, and which ids a whitespace-separated line can hold.

- An id read from JSON is a string or an integer (rank_llm files often carry integer qids and
  docids). An integer becomes its decimal text, so ``5`` and ``"5"`` are the same id. Anything
  else (an object, a list, a boolean, null, a float) is refused.
- An id written to a TREC run line (``qid Q0 docid rank score tag``, split on whitespace) must be
  non-empty and hold no whitespace (any Unicode whitespace: ``\\n``, ``\\x0b``, ``\\x85``,
  ``\\u2028``, ...) and no control or format character (categories Cc, Cf, Cs, Zl, Zp, Zs), so
  that every reader splits the line into the same six fields.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from ..errors import UserInputError

# Unicode categories refused in a run-line id: control, format (zero-width and bidi marks),
# surrogates, and every separator.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp", "Zs"})


def json_type(value: Any) -> str:
    """The JSON name of ``value``'s type, for messages: ``null``, ``a boolean``, ``a number`` ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def id_text(value: Any, what: str) -> str:
    """``value`` (a JSON string or integer) as id text; ``what`` names it in the error.

    Raises ``UserInputError`` for any other type: an object, a list, a boolean, null or a float.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise UserInputError(f"{what} must be a string or an integer, not {json_type(value)}; give each id as a JSON string")


def bad_char(text: str) -> str | None:
    """The first character of ``text`` that a whitespace-separated line cannot hold, or None."""
    for ch in text:
        if ch.isspace() or unicodedata.category(ch) in _REFUSED_CATEGORIES:
            return ch
    return None


def check_line_id(text: str, what: str) -> None:
    """Refuse an id that cannot be one field of a TREC run line; ``what`` names it.

    Raises ``UserInputError`` for an empty id, or one holding whitespace or a control or format
    character (named by its code point).
    """
    if not text:
        raise UserInputError(f"{what} is empty; TREC run lines need a non-empty id")
    ch = bad_char(text)
    if ch is not None:
        name = unicodedata.name(ch, "") or unicodedata.category(ch)
        raise UserInputError(
            f"{what} holds U+{ord(ch):04X} ({name.lower()}), which breaks TREC run lines (fields are split on "
            "whitespace); rename the id, or write --format json or rank_llm, which keep any id"
        )


def text_field(value: Any, where: str, name: str) -> str:
    """``value`` when it is a string; else ``UserInputError`` naming ``where`` and the field ``name``."""
    if not isinstance(value, str):
        raise UserInputError(f'{where}: "{name}" must be a string, not {json_type(value)}')
    return value


def id_field(value: Any, where: str, name: str) -> str:
    """``value`` as id text (see :func:`id_text`); the error names ``where`` and the field ``name``."""
    return id_text(value, f'{where}: "{name}"')
