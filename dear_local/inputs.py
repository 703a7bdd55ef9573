"""Reading rerank requests from files and stdin, for the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO

from .errors import UserInputError
from .formats.ids import id_text
from .formats.request import Request
from .textcheck import check_text

__all__ = ["Request", "jsonl_requests", "lines_request", "read_text"]


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserInputError(
            f"{source} is not valid UTF-8 (byte {exc.start}); convert it first, e.g. "
            f"`iconv -f latin1 -t utf-8`"
        ) from None


def read_text(path: str | Path | None, stdin: IO[bytes] | None = None) -> str:
    if path is None:
        if stdin is None:
            raise UserInputError("no documents given; pass --docs FILE, --jsonl FILE or pipe them on stdin")
        return _decode(stdin.read(), "stdin")
    p = Path(path)
    if not p.is_file():
        raise UserInputError(f"{p} does not exist; check the path")
    return _decode(p.read_bytes(), str(p))


def lines_request(text: str, query: str | None) -> Request:
    """One document per non-blank line; a document's docid is its 0-based line number.

    Lines end at ``\n`` (an ``\r`` before it is dropped) and nowhere else, so
    the numbering is the one ``sed -n`` and editors show, minus one. Blank
    lines (empty or only whitespace) are skipped but keep their number, so a
    docid names the same line whatever surrounds it.
    """
    if query is None:
        raise UserInputError("--query is required with --docs or stdin input")
    if not query.strip():
        raise UserInputError("the query is empty; pass a non-empty --query")
    check_text(query, "--query")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the file's final newline ends the last line; it starts none
    docs, docids = [], []
    for number, line in enumerate(lines):
        line = line[:-1] if line.endswith("\r") else line
        if line.strip():
            docs.append(line)
            docids.append(str(number))
    return Request(qid="q0", query=query, documents=docs, docids=docids)


def jsonl_requests(text: str, source: str, query: str | None = None) -> list[Request]:
    """RankGPT ``{"query", "hits": [{"content", "docid"}]}`` or ``{"query", "documents"}`` records.

    A file holding one JSON array of such records (rank_llm's retrieve_results files) works too.
    """
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserInputError(f"{source} is not valid JSON: {exc}") from None
    else:
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise UserInputError(f"{source} line {n} is not valid JSON: {exc.msg}") from None
    from .formats.shapes import requests_from_records  # one shape per file, rank_llm's included

    return requests_from_records(records, source, query, _record)


def _record(r, i: int, source: str, query: str | None) -> Request:
    where = f"{source} record {i + 1}"
    if not isinstance(r, dict):
        raise UserInputError(f"{where} is not a JSON object")
    q = query or r.get("query")
    if not isinstance(q, str):
        raise UserInputError(f'{where} has no "query" string; add one or pass --query')
    check_text(q, "--query" if query else f"{where}: the query")
    if "hits" in r:
        hits = r["hits"]
        if not isinstance(hits, list) or not all(isinstance(h, dict) and "content" in h for h in hits):
            raise UserInputError(f'{where}: "hits" must be a list of objects with "content"')
        docs = [str(h["content"]) for h in hits]
        docids = [id_text(h.get("docid", j), f"{where}: the docid of hit {j + 1}") for j, h in enumerate(hits)]
        qid = id_text(r.get("qid", hits[0].get("qid", i) if hits else i), f"{where}: the qid")
    elif "documents" in r:
        raw = r["documents"]
        if not isinstance(raw, list):
            raise UserInputError(f'{where}: "documents" must be a list')
        docs = [d["text"] if isinstance(d, dict) and "text" in d else d for d in raw]
        if not all(isinstance(d, str) for d in docs):
            raise UserInputError(f'{where}: every document must be a string or {{"text": ...}}')
        docids = [str(j) for j in range(len(docs))]
        qid = id_text(r.get("qid", i), f"{where}: the qid")
    else:
        raise UserInputError(f'{where} has neither "hits" nor "documents"')
    check_text(qid, f"{where}: the qid")
    for j, d in enumerate(docs):
        check_text(d, f"{where}: document {j}")
        check_text(docids[j], f"{where}: the docid of document {j}")
    return Request(qid=qid, query=q, documents=docs, docids=docids)
