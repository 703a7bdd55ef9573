"""Turn a model's raw answer into a permutation, the way rank_llm does.

The parser never fails: it always returns a permutation of ``range(n)``, and
reports how much repair that took as one of ``ok``, ``wrong_format``,
``repetition`` or ``missing_documents``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

OK = "ok"
WRONG_FORMAT = "wrong_format"
REPETITION = "repetition"
MISSING_DOCUMENTS = "missing_documents"
STATUSES = (OK, WRONG_FORMAT, REPETITION, MISSING_DOCUMENTS)

_RUN = re.compile(r"\[\s*\d+\s*\](?:\s*>\s*\[\s*\d+\s*\])*")
_NUM = re.compile(r"\d+")
_THINK_END = "</think>"


@dataclass(frozen=True)
class Parsed:
    order: list[int]  # 0-based window positions, best first; always a permutation
    status: str


def _last_run(text: str) -> str | None:
    """The last ``[a] > [b] > ...`` run, preferring runs of two or more ids."""
    runs = _RUN.findall(text)
    if not runs:
        return None
    multi = [r for r in runs if ">" in r]
    return (multi or runs)[-1]


def parse_ranking(text: str, n: int, id_base: int = 0) -> Parsed:
    """Parse ``text`` into a permutation of ``range(n)``.

    Chain-of-thought before ``</think>`` is dropped. The last well-formed run
    is used; without one, every number in the text is taken (wrong_format).
    Out-of-range ids and repeats are dropped, and missing ids are appended
    in their input order.
    """
    if _THINK_END in text:
        text = text.rsplit(_THINK_END, 1)[1]
    run = _last_run(text)
    source = run if run is not None else text
    raw = [int(m) - id_base for m in _NUM.findall(source)]

    seen: set[int] = set()
    order: list[int] = []
    repeated = False
    for i in raw:
        if not 0 <= i < n:
            continue
        if i in seen:
            repeated = True
            continue
        seen.add(i)
        order.append(i)
    missing = [i for i in range(n) if i not in seen]
    order.extend(missing)

    if run is None:
        status = WRONG_FORMAT
    elif repeated:
        status = REPETITION
    elif missing or len(raw) != n:
        status = MISSING_DOCUMENTS
    else:
        status = OK
    return Parsed(order=order, status=status)


def is_complete(text: str, n: int, id_base: int = 0) -> bool:
    """True once ``text`` holds a run naming every id exactly once."""
    run = _last_run(text)
    if run is None:
        return False
    ids = [int(m) - id_base for m in _NUM.findall(run)]
    return len(ids) == n and sorted(ids) == list(range(n))
