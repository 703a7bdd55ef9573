"""Up-front checks of Python API arguments, with messages that name the Python argument.

Each check raises :class:`dear_local.errors.UserInputError` (or the subclass passed as
``error``) with one line: ``NAME must be ..., got VALUE``. Integers are any
:class:`numbers.Integral` but ``bool`` (so numpy integers count); real numbers any
:class:`numbers.Real` but ``bool``, and must be finite.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from .errors import UserInputError


def shown(value: Any) -> str:
    """A short description of ``value`` for a message: its repr for numbers and short text, else its type."""
    if value is None or isinstance(value, (bool, numbers.Number)):
        return repr(value) if not isinstance(value, numbers.Integral) or isinstance(value, bool) else str(int(value))
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else f"a str of {len(value)} characters"
    return type(value).__name__


def is_int(value: Any) -> bool:
    """True for an integer (``int``, numpy integers), False for ``bool`` and everything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value: Any, lo: int, hi: int | None = None, *, optional: bool = False,
              error: type[Exception] = UserInputError) -> int | None:
    """``value`` as an ``int`` in ``[lo, hi]`` (``None`` allowed when ``optional``)."""
    if value is None and optional:
        return None
    bound = f"between {lo} and {hi}" if hi is not None else f"of at least {lo}"
    what = f"{'None or ' if optional else ''}an int {bound}"
    if not is_int(value) or value < lo or (hi is not None and value > hi):
        raise error(f"{name} must be {what}, got {shown(value)}")
    return int(value)


def check_real(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False,
               error: type[Exception] = UserInputError) -> float:
    """``value`` as a finite ``float`` in ``[lo, hi]`` (``(lo, hi]`` when ``lo_open``)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (v > lo if lo_open else v >= lo) and v <= hi
    if not ok:
        low = f"more than {lo:g}" if lo_open else f"at least {lo:g}"
        raise error(f"{name} must be a number {low} and at most {hi:g}, got {shown(value)}")
    return float(value)


def check_choice(name: str, value: Any, choices: tuple[str, ...], *, optional: bool = False,
                 error: type[Exception] = UserInputError) -> str | None:
    """``value``, one of ``choices`` (``None`` allowed when ``optional``)."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or value not in choices:
        raise error(f"{name} must be {'None or ' if optional else ''}one of: {', '.join(choices)}; got {shown(value)}")
    return value


def check_str(name: str, value: Any, *, optional: bool = False, error: type[Exception] = UserInputError) -> str | None:
    """``value``, a non-empty ``str`` (``None`` allowed when ``optional``)."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise error(f"{name} must be {'None or ' if optional else ''}a non-empty str, got {shown(value)}")
    return value


def check_str_list(name: str, value: Any, *, error: type[Exception] = UserInputError) -> tuple[str, ...]:
    """``value``, a list or tuple of non-empty ``str``, as a tuple (a bare ``str`` is refused)."""
    if not isinstance(value, (list, tuple)):
        hint = f" (wrap one URL in a list: [{value!r}])" if isinstance(value, str) and len(value) < 200 else ""
        raise error(f"{name} must be a list of str{hint}, got {shown(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise error(f"{name}[{i}] must be a non-empty str, got {shown(item)}")
    return tuple(value)
