"""Deadlines: an answer that comes back before the client gives up, with the ranking as far as it got.

RAG applications call a reranker with a timeout of their own (Dify's LocalAI provider 10 s,
RAGFlow 30 s, Dify's OpenAI-compatible provider 60 s) and fall back silently when it passes,
while a listwise window on a CPU can take tens of seconds. A deadline makes the server answer
in time instead.

- A request's deadline is the ``X-Deadline`` header (seconds, a decimal number such as ``25`` or
  ``9.5``) or else the server's ``--deadline``; either is capped by ``--timeout``. With neither,
  a request runs to its end, or to ``--timeout`` (504).
- The answer leaves :data:`MARGIN_SECONDS` (or a tenth of the deadline, if less) before the
  deadline, so it reaches the client in time.
- If the ranking has not finished by then, the answer holds the best order available: the
  windows that finished applied, every other document in input order, scores derived from rank,
  ``meta.complete`` false and a ``meta.warnings`` entry (:func:`warning`). With a pointwise first
  stage that finished, the rest keep its order and every score is its probability; its scoring
  itself is not cut short, and a deadline that comes during it answers in input order. The
  ``X-Dear-Local-Partial`` header says the same for shapes without ``meta`` (TEI's bare array).
- A window that could not finish before the deadline is not started (its length is guessed from
  the window before it, and for a request's first window from the server's running mean of window
  times, once it has one); one running when the deadline comes finishes in the background.
- A request whose wait in the queue alone would pass its deadline gets 503 at once, with
  ``Retry-After``; a window still running past its own request's deadline counts as one more
  window in that wait.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

HEADER = "X-Deadline"
PARTIAL_HEADER = "X-Dear-Local-Partial"
MARGIN_SECONDS = 0.2  # the answer leaves this long before the deadline (at most a tenth of it)
HEADER_DOC = (
    "Seconds this request may take, waiting included (a decimal number above 0, such as 25): the answer comes "
    "back before then, ranked as far as time allowed. Overrides the server's --deadline; capped by --timeout."
)
FIX = f"send fewer documents, or allow more time (the {HEADER} header, or serve --deadline)"


class DeadlineReached(Exception):
    """Raised inside a ranking job whose next window could not finish before the deadline."""


def parse_seconds(value: str) -> float:
    """The seconds of an ``X-Deadline`` header value; ``ValueError`` with one line naming the fix otherwise."""
    try:
        seconds = float(value.strip())
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise ValueError(f"the {HEADER} header must be a number of seconds above 0, such as 25; got {shown!r}")
    return seconds


@dataclass(frozen=True)
class Deadline:
    """``seconds`` a request may take from ``start`` (a ``time.monotonic()`` reading)."""

    seconds: float
    start: float

    @property
    def answer_at(self) -> float:
        """When the answer leaves (monotonic seconds): the deadline less a margin for sending it."""
        return self.start + self.seconds - min(MARGIN_SECONDS, self.seconds / 10)

    def remaining(self) -> float:
        """Seconds until :attr:`answer_at`, 0 once it has passed."""
        return max(0.0, self.answer_at - time.monotonic())


def deadline_of(header: str | None, default: float | None, timeout: float, start: float) -> Deadline | None:
    """The deadline of a request: its ``X-Deadline`` header, else ``default`` (``--deadline``), capped by ``timeout``.

    None when neither is set. Raises ``ValueError`` for a header that is not a number of seconds above 0.
    """
    seconds = parse_seconds(header) if header is not None else default
    if seconds is None:
        return None
    return Deadline(min(seconds, timeout), start)


def warning(done: int, planned: int, first_stage: str | None = None) -> str:
    """The ``meta.warnings`` line of an answer the deadline cut short after ``done`` of ``planned`` windows.

    ``first_stage``: None without a pointwise first stage; ``"done"`` when it ordered the list
    before the deadline (the answer starts from its order and keeps its probabilities);
    ``"unfinished"`` when the deadline came while it was still scoring.
    """
    if first_stage == "unfinished":
        return ("the request's deadline came before the pointwise ranker finished scoring, so the documents are in "
                f"input order and scores are derived from rank; {FIX}")
    if first_stage == "done":
        rest = "the pointwise ranker's order, and scores are its probabilities"
        if done == 0:
            return f"the request's deadline came before any listwise window was ranked, so the documents are in {rest}; {FIX}"
        return (
            f"the request's deadline came after {done} of {planned} windows: the documents those windows ranked are in "
            f"the listwise model's order, the others in {rest}; {FIX}"
        )
    if done == 0:
        return f"the request's deadline came before any window was ranked, so the documents are in input order; {FIX}"
    return (
        f"the request's deadline came after {done} of {planned} windows: the documents those windows ranked are in "
        f"the model's order, the others in input order, and scores are derived from rank; {FIX}"
    )


def partial_header(done: int, planned: int) -> str:
    """The ``X-Dear-Local-Partial`` value, e.g. ``3/9 windows``."""
    return f"{done}/{planned} windows"
