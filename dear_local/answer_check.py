"""Runs whose model answers did not parse: a loud warning, or an error under ``--strict``.

A window whose answer holds no ranking the parser can read (status ``wrong_format``) keeps
its documents in input order, with scores that only restate that order. One such window in a
long run is noise; many mean the prompt does not fit the model (a GGUF passed by path whose
template is wrong, a model that does not rank), and the output must not pass as a ranking.
:class:`ParseTally` counts them over a run (CLI) or a request (server, Python API).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .errors import DearLocalError

UNPARSED = "wrong_format"
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

    def add(self, statuses: Iterable[str]) -> None:
        """Count one query's window statuses (``RerankResponse.statuses``)."""
        for status in statuses:
            self.windows += 1
            self.unparsed += status == UNPARSED

    @property
    def failing(self) -> bool:
        """At least one window, and at least ``THRESHOLD`` of them, did not parse."""
        return self.unparsed > 0 and self.unparsed >= THRESHOLD * self.windows

    def message(self, fix: str = CLI_FIX) -> str:
        """What went wrong, and ``fix`` (in the caller's terms), in one line."""
        share = 100 * self.unparsed / max(self.windows, 1)
        return (
            f"{self.unparsed} of {self.windows} windows ({share:.0f}%) gave no ranking the parser could read "
            f"({UNPARSED}); their documents keep the input order and their scores mean nothing. The prompt "
            f"template probably does not fit this model: {fix}"
        )
