"""TREC run files and qrels, as trec_eval reads them.

- A run holds one line per retrieved document: ``qid Q0 docid rank score tag``, split on
  whitespace. As in trec_eval, the score decides the order; the rank column only breaks ties
  (then the line order does).
- Qrels hold one judgment per line: ``qid iteration docid grade``, the grade an integer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserInputError
from .lines import iter_lines

RUN_TAG = "dear-local"


@dataclass(frozen=True)
class Retrieved:
    """One run line: a document retrieved for a query, with its rank and score."""

    docid: str
    rank: int
    score: float


def read_run(path: str | Path) -> dict[str, list[Retrieved]]:
    """Read a TREC run: ``{qid: [Retrieved, ...]}``, best first, queries in file order.

    Raises ``UserInputError`` for a missing or empty file, a line without six fields, a rank
    or score that is not a finite number (nan and inf are refused), or a document listed twice for one query.
    """
    run: dict[str, list[Retrieved]] = {}
    seen: dict[str, set[str]] = {}
    for n, line in iter_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise UserInputError(
                f"{path} line {n} has {len(fields)} fields; a TREC run line is `qid Q0 docid rank score tag`"
            )
        qid, _, docid, rank, score, _ = fields
        try:
            entry = Retrieved(docid, int(rank), float(score))
        except ValueError:
            raise UserInputError(
                f"{path} line {n}: rank {rank!r} and score {score!r} must be numbers "
                "(`qid Q0 docid rank score tag`)"
            ) from None
        if not math.isfinite(entry.score):
            raise UserInputError(
                f"{path} line {n}: the score {score!r} is not a finite number; a run's scores must be "
                "finite (fix or drop that line)"
            )
        if docid in seen.setdefault(qid, set()):
            raise UserInputError(f"{path} line {n} lists document {docid} a second time for query {qid}; remove the duplicate")
        seen[qid].add(docid)
        run.setdefault(qid, []).append(entry)
    if not run:
        raise UserInputError(f"{path} holds no run lines (`qid Q0 docid rank score tag`)")
    for entries in run.values():
        entries.sort(key=lambda e: (-e.score, e.rank))  # stable: line order breaks the last ties
    return run


def run_scores(run: dict[str, list[Retrieved]]) -> dict[str, dict[str, float]]:
    """``{qid: {docid: score}}``, the form trec_eval and pytrec_eval take."""
    return {qid: {e.docid: e.score for e in entries} for qid, entries in run.items()}


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Read TREC qrels: ``{qid: {docid: grade}}``.

    Raises ``UserInputError`` for a missing or empty file, a line without four fields, or a
    grade that is not an integer.
    """
    qrels: dict[str, dict[str, int]] = {}
    for n, line in iter_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 4:
            raise UserInputError(
                f"{path} line {n} has {len(fields)} fields; a qrels line is `qid iteration docid grade`"
            )
        qid, _, docid, grade = fields
        try:
            qrels.setdefault(qid, {})[docid] = int(grade)
        except ValueError:
            raise UserInputError(f"{path} line {n}: the grade {grade!r} must be an integer") from None
    if not qrels:
        raise UserInputError(f"{path} holds no judgments (`qid iteration docid grade`)")
    return qrels


def run_line(qid: str, docid: str, rank: int, score: float, tag: str = RUN_TAG) -> str:
    """One TREC run line; ``rank`` counts from 1."""
    return f"{qid} Q0 {docid} {rank} {score:g} {tag}"
