"""Make untrusted text safe to write to a terminal.

Query and document text, ids, file names and server replies can hold control characters:
ESC starts an escape sequence that can retitle the window, move the cursor, rewrite earlier
lines or (in some terminals) run actions; BEL, backspace and carriage return overwrite what
was shown; bidirectional overrides reorder the text a reader sees. :func:`printable` shows
every such character as a visible escape (``\\x1b``, ``\\u202e``) instead.
"""

from __future__ import annotations

import re

# C0 controls (tab and newline included: a table row or one-line error must stay one line),
# DEL, C1 controls, and the Unicode bidirectional and line/paragraph-separator format characters.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
UNSAFE = _UNSAFE  # the characters printable() escapes, for writers that escape them their own way (JSON)


def _escape(m: re.Match) -> str:
    code = ord(m.group(0))
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every control, C1 and bidi format character shown as a visible escape.

    ``keep_newlines`` leaves ``\\n`` as a line break (for multi-line messages); every other
    such character, tab and carriage return included, is escaped. Ordinary text, any script
    and emoji included, is returned unchanged.
    """
    if keep_newlines:
        return "\n".join(_UNSAFE.sub(_escape, part) for part in text.split("\n"))
    return _UNSAFE.sub(_escape, text)
