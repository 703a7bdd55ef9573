"""Runs whose model answers did not parse: a loud warning, or an error under ``--strict``.

A window whose answer holds no ranking the parser can read keeps its documents in input
order, with scores that only restate that order. That is status ``wrong_format`` (no
bracketed id), and also any answer that gave fewer than two usable ids (one, for a window of
one passage) whatever its status: ``[9] > [8] > [7]`` for three passages, or ``[0] > [0]``
with ids that start at 1. One such window in a
long run is noise; many mean the prompt does not fit the model (a GGUF passed by path whose
template is wrong, a model that does not rank), and the output must not pass as a ranking.
:class:`ParseTally` counts them over a run (CLI) or a request (server, Python API).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Union

from .errors import DearLocalError

UNPARSED = "wrong_format"
# Fewest ids from the model that make a window's order a ranking (fewer for a smaller window).
MIN_MODEL_IDS = 2

# One window as ParseTally.add takes it: a WindowResult (anything with ``status``,
# ``model_ids``, ``start`` and ``end``), a (status, model ids, window size) tuple, a
# (status, model ids) tuple, or a bare status (then only ``wrong_format`` counts).
Window = Union[str, tuple, object]


def unparsed(status: str, model_ids: int | None, size: int | None = None) -> bool:
    """True when a window's answer gave no usable ranking.

    ``model_ids`` is how many ids the answer named that the order kept (None: a window that
    needed no answer, or not known); ``size`` the window's passages (None: not known, taken
    as 2 or more).
    """
    if status == UNPARSED:
        return True
    if model_ids is None:
        return False
    need = MIN_MODEL_IDS if size is None else min(MIN_MODEL_IDS, size)
    return model_ids < need


def _unparsed(window: Window) -> bool:
    if isinstance(window, str):
        return unparsed(window, None)
    if isinstance(window, tuple):
        return unparsed(*window)
    return unparsed(window.status, window.model_ids, window.end - window.start)
# Share of windows (at least one) without a readable ranking from which a run is reported.
THRESHOLD = 0.25


CLI_FIX = (
    "pass the model as NAME[:QUANT] so its manifest sets the profile, or choose --template "
    "(see `dear-local templates`)"
)
SERVE_FIX = "start `dear-local serve` with the model as NAME[:QUANT] so its manifest sets the profile, or with --template"


class UnparsedAnswersError(DearLocalError):
    """``--strict``: too many windows had no readable ranking."""

    exit_code = 1


@dataclass
class ParseTally:
    """Windows seen and windows whose answer did not parse, over a run or a request."""

    windows: int = 0
    unparsed: int = 0

    def add(self, windows: Iterable[Window]) -> None:
        """Count one query's windows (``RerankResponse.windows``; see ``Window`` for other forms)."""
        for window in windows:
            self.windows += 1
            self.unparsed += _unparsed(window)

    @property
    def failing(self) -> bool:
        """At least one window, and at least ``THRESHOLD`` of them, did not parse."""
        return self.unparsed > 0 and self.unparsed >= THRESHOLD * self.windows

    def message(self, fix: str = CLI_FIX) -> str:
        """What went wrong, and ``fix`` (in the caller's terms), in one line."""
        share = 100 * self.unparsed / max(self.windows, 1)
        return (
            f"{self.unparsed} of {self.windows} windows ({share:.0f}%) gave no ranking the parser could read "
            f"({UNPARSED}, or fewer than {MIN_MODEL_IDS} usable ids); their documents keep the input order and their scores mean nothing. The prompt "
            f"template probably does not fit this model: {fix}"
        )
