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


def _valid(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_record(record: object, where: str) -> None:
    """Raise :class:`UserInputError` when any string in ``record`` (a parsed JSON value) is not
    valid Unicode: object keys and values, list items, at any depth.

    The message names ``where`` (e.g. ``"FILE line 3"``) and the field path, such as
    ``candidates[0].doc.url``. The walk uses no recursion, so depth costs nothing but time.
    """
    stack: list[tuple[object, str]] = [(record, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if not _valid(value):
                check_text(value, f"{where}: the field {path or '(the record itself)'}")
        elif isinstance(value, dict):
            for key, item in value.items():
                key = str(key)
                shown = key if _valid(key) else key.encode("utf-8", "backslashreplace").decode("ascii")
                child = f"{path}.{shown}" if path else shown
                if not _valid(key):
                    check_text(key, f"{where}: the key of the field {child}")
                stack.append((item, child))
        elif isinstance(value, list):
            for i in range(len(value) - 1, -1, -1):
                stack.append((value[i], f"{path}[{i}]"))
