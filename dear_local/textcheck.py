"""Refuse text that is not valid Unicode before it reaches a tokenizer.

Python strings can hold lone surrogates (U+D800..U+DFFF): a JSON ``"\\ud800"``
escape, or a command-line argument in a non-UTF-8 encoding (Python keeps each
undecodable byte as U+DC80..U+DCFF). No tokenizer can encode them.
"""

from __future__ import annotations

from .errors import UserInputError


def check_text(text: str, what: str) -> None:
    """Raise :class:`UserInputError` naming ``what`` when ``text`` is not valid Unicode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        if 0xDC80 <= code <= 0xDCFF:
            found = f"the byte 0x{code - 0xDC00:02x}, which is not UTF-8,"
            fix = "pass UTF-8 text (convert it first, e.g. with `iconv -t utf-8`)"
        else:
            found = f"a lone surrogate U+{code:04X}"
            fix = "send valid Unicode (a surrogate must come in a high-low pair)"
        raise UserInputError(
            f"{what} is not valid text: it holds {found} at character {exc.start}; {fix}"
        ) from None
