"""Turn a model's raw answer into a permutation, in the model's own order.

The parser never fails: it always returns a permutation of ``range(n)``, and
reports how much repair that took as one of rank_llm's statuses:

- ``ok``: the answer names every id exactly once;
- ``missing_documents``: it names fewer ids than there are passages, or an
  id is missing because an out-of-range one took its place;
- ``repetition``: it names an id twice, or more ids than there are passages;
- ``wrong_format``: it holds no bracketed id at all (every number in the text
  is read instead, as rank_llm's own parser does).

An answer is read as *runs*: bracketed ids such as ``[3]`` joined by nothing
but separators. A separator is whitespace (newlines included), ``>`` (``>>``),
a comma, a semicolon, ``|``, CJK list punctuation (``、``, ``，``, ``；``), an
arrow (``->``, ``→``, ``=>`` ...), a dash or bullet, a list marker (``2.``,
``2)``, ``(2)``, ``#2``, ``Rank 2:``), or one of the connective words that
only ever order a list: ``and``, ``then``, ``next``, ``finally``, ``lastly``,
``followed by``, ``after that`` and the ordinals ``first`` ... ``tenth`` and
``last`` (any case, in any combination, e.g. ``, and then finally``, so
``First [4], second [2], third [0]`` is one run). So ``[3] > [1] > [2]``,
``[3], [1], [2]``, ``[3] → [1] → [2]``, ``[3], then [1] and finally [2]`` and
``1. [3]\\n2. [1]\\n3. [2]`` are all the run 3, 1, 2. Any other word (``[3] is
best, then [1]``), a full stop or ``...`` ends a run. A list whose items go on
after their id (``1. [3] Paris is ...\\n2. [1] ...``) is a run too: a line
that starts with a list marker and an id continues the run of the line just
before it when that line also started with one (after a label such as
``Ranking:``, for the first line).

Chain-of-thought is skipped: text up to the last ``</think>`` is dropped. Of
several runs the answer is, in this order of preference:

1. the last *complete* run, one that names every id exactly once, so a remark
   after the ranking (``[4] > [2] > [0] > [1] > [3]. Note that [1] and [3]
   are close.``) does not replace it;
2. else the last complete *sentence*: the ids of one sentence (no ``.``, ``!``,
   ``?`` or line break between them), when they name every id exactly once, so
   a ranking in prose (``[4] is best, followed by [2], then [0], [1] and
   [3].``) is read whole;
3. else the last run naming two or more ids;
4. else the last lone ``[x]``.

Reasoning that mentions ids before the ranking (``[0] is about bananas. [1]
and [2] are about Paris. So: [1] > [2] > [0]``) therefore parses to the final
ranking. Missing ids are appended in input order; repeats and out-of-range ids
are dropped. :attr:`Parsed.model_ids` says how many ids of the order came from
the answer rather than from that repair.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

OK = "ok"
WRONG_FORMAT = "wrong_format"
REPETITION = "repetition"
MISSING_DOCUMENTS = "missing_documents"
STATUSES = (OK, WRONG_FORMAT, REPETITION, MISSING_DOCUMENTS)

_ID = re.compile(r"\[\s*(\d+)\s*\]")
_NUM = re.compile(r"\d+")
_THINK_END = "</think>"
# What may stand between two ids of one run, one piece at a time: a list
# marker, whitespace and ordering or listing punctuation, or a connective word. No
# other letters (than a "Rank 2" marker) and no bare full stop, so prose and
# "..." end a run. Pieces are matched one after another without backtracking,
# so a long gap costs linear time.
_SEPARATOR_PIECE = re.compile(
    r"""
        \d+\s*[.):]                                       # 2.  2)  2:
      | \(\d+\)                                           # (2)
      | \#\d+\s*[.):]?                                     # #2
      | (?:rank(?:ed)?|no\.?)\s*\#?\d+\s*[.):\-]?         # Rank 2:  No. 2
      | [\s>,;|/=\-*+\u3001\uff0c\uff1b\u2013\u2014\u2022\u00b7\u00bb\u227b\u2192\u21d2\u2794\u279c-\u279e\u27a1\u27f6\u27f9]+
      | \b(?:and|then|next|finally|lastly|followed\s+by|after\s+that  # connectives of a list
           |first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|last)\b
    """,
    re.IGNORECASE | re.VERBOSE,
)


# A short label before the first item of a list, on its line: "Ranking: 1. [3] ...".
_LABEL = re.compile(r"[^\[\]\n:]{0,60}:")


@dataclass(frozen=True)
class Parsed:
    order: list[int]  # 0-based window positions, best first; always a permutation
    status: str
    model_ids: int = 0  # how many leading ids of ``order`` the answer named (the rest were appended)


def _joins(gap: str) -> bool:
    """True when ``gap`` is made of separator pieces only (the empty gap included)."""
    pos, end = 0, len(gap)
    while pos < end:
        m = _SEPARATOR_PIECE.match(gap, pos)
        if m is None:
            return False
        pos = m.end()
    return True


def _starts_line(prefix: str) -> bool:
    """True when the text before an id on its line is only a list marker, maybe after a label."""
    if _joins(prefix):
        return True
    label = _LABEL.match(prefix)
    return label is not None and _joins(prefix[label.end() :])


def _runs(text: str) -> list[list[int]]:
    """Every run of bracketed ids in ``text``, in order; each run is its ids as written."""
    runs: list[list[int]] = []
    prev_end = 0
    prev_starts_line = False
    line_start = -1  # where the line of the previous id starts
    for m in _ID.finditer(text):
        newline = text.rfind("\n", prev_end, m.start())
        gap = text[prev_end : m.start()]
        if newline >= 0 or line_start < 0:
            line_start = newline + 1
            # Only the first id of a line can start it (the prefix of a later one holds an id).
            starts_line = _starts_line(text[line_start : m.start()])
        else:
            starts_line = False
        if runs and (
            _joins(gap)
            # A list item that goes on after its id: the rest of its line is free
            # text, and the next line starts with nothing but a marker and the id.
            or (prev_starts_line and newline >= 0 and _joins(gap.split("\n", 1)[1]))
        ):
            runs[-1].append(int(m.group(1)))
        else:
            runs.append([int(m.group(1))])
        prev_end, prev_starts_line = m.end(), starts_line
    return runs


# Where a sentence ends: a full stop, "!" or "?" before a space or the end, CJK ones, a line break.
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)|[\u3002\uff01\uff1f\n]")


def _sentences(text: str) -> list[list[int]]:
    """The bracketed ids of each sentence of ``text`` that holds any, in order."""
    out: list[list[int]] = []
    prev_end = -1
    for m in _ID.finditer(text):
        if prev_end < 0 or _SENTENCE_END.search(text, prev_end, m.start()):
            out.append([])
        out[-1].append(int(m.group(1)))
        prev_end = m.end()
    return out


def _complete(ids: list[int], n: int, id_base: int) -> bool:
    return len(ids) == n and sorted(ids) == list(range(id_base, id_base + n))


def _answer_run(text: str, n: int, id_base: int) -> list[int] | None:
    """The run that is the answer, by the preferences of the module docstring; None: no bracketed id."""
    if _THINK_END in text:
        text = text.rsplit(_THINK_END, 1)[1]
    runs = _runs(text)
    if not runs:
        return None
    for candidates in (runs, _sentences(text)):
        complete = [r for r in candidates if _complete(r, n, id_base)]
        if complete:
            return complete[-1]
    multi = [r for r in runs if len(r) > 1]
    return (multi or runs)[-1]


def parse_ranking(text: str, n: int, id_base: int = 0) -> Parsed:
    """Parse ``text`` into a permutation of ``range(n)``: window positions, best first.

    ``id_base`` is the template's first id (0 or 1). See the module docstring
    for what counts as a run and what each status means.
    """
    run = _answer_run(text, n, id_base)
    if run is None:
        body = text.rsplit(_THINK_END, 1)[1] if _THINK_END in text else text
        raw = [int(m) - id_base for m in _NUM.findall(body)]
    else:
        raw = [i - id_base for i in run]

    seen: set[int] = set()
    order: list[int] = []
    for i in raw:
        if 0 <= i < n and i not in seen:
            seen.add(i)
            order.append(i)
    model_ids = len(order)
    missing = [i for i in range(n) if i not in seen]
    order.extend(missing)

    if run is None:
        status = WRONG_FORMAT
    elif len(raw) < n:
        status = MISSING_DOCUMENTS
    elif len(raw) > n or len(set(raw)) < len(raw):
        status = REPETITION
    elif missing:
        status = MISSING_DOCUMENTS
    else:
        status = OK
    return Parsed(order=order, status=status, model_ids=model_ids)


def is_complete(text: str, n: int, id_base: int = 0) -> bool:
    """True once a run of ``text`` (not a prose sentence) names every id exactly once.

    Used to stop decoding early, so prose ids are not enough: reasoning that mentions every
    passage once must not cut off the ranking that follows it.
    """
    if _THINK_END in text:
        text = text.rsplit(_THINK_END, 1)[1]
    return any(_complete(r, n, id_base) for r in _runs(text))
