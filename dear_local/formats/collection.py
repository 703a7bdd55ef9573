"""Topics and corpora, as TREC, MS MARCO, Pyserini and BEIR ship them.

- Topics: TSV lines ``qid<TAB>text``.
- A corpus: TSV lines ``docid<TAB>text`` (MS MARCO's ``collection.tsv``), or JSONL records
  ``{"id" | "docid" | "_id": ..., "contents" | "text": ..., "title"?: ...}`` (Pyserini's and
  BEIR's layouts; a non-empty title goes in front as rank_llm does, see ``formats.rank_llm``).
  A ``.jsonl``/``.json`` name (optionally ``.gz``) means JSONL; a name without a suffix (``-``
  for stdin, a pipe such as ``<(zcat corpus.jsonl.gz)``, ``/dev/stdin``) means JSONL when its
  first non-blank line starts with ``{``; any other name means TSV.

The corpus is read in one streaming pass that keeps only the documents asked for, so a
multi-GB collection never has to fit in memory; its first occurrence wins when a docid repeats.

A TSV text field written CSV-style (starting and ending with ``"``, every inner quote doubled,
as in NovelEval's corpus) is unquoted; any other text is kept exactly as it is. A plain text
that happens to look CSV-quoted (say ``"a ""b"" c"`` meant literally) is therefore unquoted too.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterable

from ..errors import UserInputError
from ..textcheck import check_record
from .jsontext import loads
from .lines import iter_lines
from .rank_llm import doc_text

CORPUS_ID_FIELDS = ("id", "docid", "_id")


def unquote_field(text: str) -> str:
    """``text`` without CSV quoting when it is CSV-quoted, else ``text`` unchanged."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        inner = text[1:-1]
        if inner.replace('""', "").count('"') == 0:
            return inner.replace('""', '"')
    return text


def _tsv_pairs(path: str | Path, what: str, layout: str,
               lines: Iterable[tuple[int, str]] | None = None) -> Iterable[tuple[int, str, str]]:
    for n, line in iter_lines(path) if lines is None else lines:
        if not line.strip():
            continue
        key, tab, text = line.partition("\t")
        if not tab:
            raise UserInputError(f"{path} line {n} has no tab; {what} lines are `{layout}`")
        yield n, key.strip(), unquote_field(text)


def read_topics(path: str | Path) -> dict[str, str]:
    """Read topics ``qid<TAB>text`` into ``{qid: text}``.

    Raises ``UserInputError`` for a missing file, a line without a tab, an empty query text, a
    qid given twice, or a file with no topics.
    """
    topics: dict[str, str] = {}
    for n, qid, text in _tsv_pairs(path, "topics", "qid<TAB>text"):
        if not text.strip():
            raise UserInputError(f"{path} line {n}: query {qid} has no text")
        if qid in topics:
            raise UserInputError(f"{path} line {n} gives query {qid} a second time; keep one line per query")
        topics[qid] = text
    if not topics:
        raise UserInputError(f"{path} holds no topics (`qid<TAB>text` lines)")
    return topics


def corpus_layout(path: str | Path) -> str | None:
    """``"jsonl"`` for a ``.jsonl``/``.json`` file (optionally ``.gz``), ``None`` for a name without
    a suffix (stdin, a pipe: the first line decides), else ``"tsv"``."""
    suffixes = Path(path).suffixes
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if not suffixes:
        return None
    return "jsonl" if suffixes[-1] in (".jsonl", ".json") else "tsv"


def _corpus_lines(path: str | Path) -> tuple[str, Iterable[tuple[int, str]]]:
    """The corpus's layout and its lines, read once (a pipe cannot be read twice)."""
    lines = iter_lines(path)
    layout = corpus_layout(path)
    if layout is not None:
        return layout, lines
    head: list[tuple[int, str]] = []
    for n, line in lines:
        head.append((n, line))
        if line.strip():
            break
    layout = "jsonl" if head and head[-1][1].lstrip().startswith("{") else "tsv"
    return layout, itertools.chain(head, lines)


def _jsonl_docs(path: str | Path, lines: Iterable[tuple[int, str]] | None = None) -> Iterable[tuple[str, str, str]]:
    """``(docid, where, record)`` for every record, the text left to read only when wanted."""
    for n, line in iter_lines(path) if lines is None else lines:
        if not line.strip():
            continue
        record = loads(line, f"{path} line {n}")
        check_record(record, f"{path} line {n}")
        if not isinstance(record, dict):
            raise UserInputError(f"{path} line {n} is not a JSON object")
        for key in CORPUS_ID_FIELDS:
            if key in record:
                docid = record[key]
                break
        else:
            raise UserInputError(f'{path} line {n} has no document id; give it "id", "docid" or "_id"')
        if isinstance(docid, bool) or not isinstance(docid, (str, int)):
            raise UserInputError(f"{path} line {n}: the document id must be a string or an integer")
        yield str(docid), f"{path} line {n}", record


def read_corpus(path: str | Path, wanted: Iterable[str]) -> dict[str, str]:
    """The text of every document of ``wanted`` found in the corpus at ``path``: ``{docid: text}``.

    One streaming pass; documents not in ``wanted`` are skipped without being kept, and the
    pass stops early once every wanted document is found. Docids missing from the corpus are
    simply absent from the result (the caller reports them). Raises ``UserInputError`` for a
    missing file, a TSV line without a tab, or a JSONL line that is not a record with an id
    and a text.
    """
    wanted = set(wanted)
    found: dict[str, str] = {}
    if not wanted:
        return found
    layout, lines = _corpus_lines(path)
    if layout == "jsonl":
        for docid, where, record in _jsonl_docs(path, lines):
            if docid in wanted and docid not in found:
                found[docid] = doc_text(record, where)
                if len(found) == len(wanted):
                    break
    else:
        for _, docid, text in _tsv_pairs(path, "corpus", "docid<TAB>text", lines):
            if docid in wanted and docid not in found:
                found[docid] = text
                if len(found) == len(wanted):
                    break
    return found
