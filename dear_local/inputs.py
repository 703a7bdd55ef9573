"""Reading rerank requests from files and stdin, for the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import IO

from .errors import UserInputError
from .formats.jsontext import loads
from .formats.lines import open_binary
from .formats.request import Request
from .textcheck import check_record, check_text

__all__ = ["Request", "jsonl_requests", "lines_request", "open_input", "read_lines_request", "read_text"]


BOM = b"\xef\xbb\xbf"  # a UTF-8 byte-order mark, which some editors write first; dropped


_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")  # UTF-32 LE starts like UTF-16 LE; iconv's utf-16 reads neither wrong


def iconv_hint(start: bytes) -> str:
    """The conversion to suggest for bytes that are not UTF-8, from the file's first bytes.

    A UTF-32 or UTF-16 byte-order mark names that encoding; anything else gets ``latin1``.
    """
    if start.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return "`iconv -f utf-32 -t utf-8`"
    if start.startswith(_UTF16_BOMS):
        return "`iconv -f utf-16 -t utf-8` (the file starts with a UTF-16 byte-order mark)"
    return "`iconv -f latin1 -t utf-8`"


def _decode(data: bytes, source: str) -> str:
    try:
        return data.removeprefix(BOM).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserInputError(
            f"{source} is not valid UTF-8 (byte {exc.start + (3 if data.startswith(BOM) else 0)}); "
            f"convert it first, e.g. {iconv_hint(data[:4])}"
        ) from None


def open_input(path: str | Path, stdin: IO[bytes] | None = None) -> IO[bytes]:
    """An input file opened for reading bytes; see :func:`dear_local.formats.lines.open_binary`."""
    return open_binary(path, stdin)


def read_text(path: str | Path | None, stdin: IO[bytes] | None = None) -> str:
    """The whole text of ``path`` (``-`` or ``None``: ``stdin``), UTF-8 with a leading BOM dropped.

    Raises ``UserInputError`` for no input at all, a path that cannot be read, or bytes that
    are not UTF-8.
    """
    if path is None:
        if stdin is None:
            raise UserInputError("no documents given; pass --docs FILE, --jsonl FILE or pipe them on stdin")
        return _decode(stdin.read(), "stdin")
    source = "stdin" if str(path) == "-" else str(path)
    f = open_input(path, stdin)
    try:
        data = f.read()
    except OSError as exc:
        raise UserInputError(f"{source} could not be read: {exc.strerror or exc}; check the file") from None
    finally:
        if f is not stdin:
            f.close()
    return _decode(data, source)


def read_lines_request(path: str | Path | None, stdin: IO[bytes] | None, query: str | None,
                       depth: int | None = None) -> Request:
    """:func:`lines_request` read line by line from ``path`` (``-`` or ``None``: ``stdin``).

    Only the documents are kept, never the whole file as well, and a line that is not UTF-8
    is reported by its number. Reading stops at the first ``depth`` documents (``--depth``;
    None: all), and a file with more documents than a request may hold (``MAX_DOCUMENTS``)
    is refused as soon as the one past the limit is read, so a huge file costs no more than
    the limit. Raises what :func:`read_text` and :func:`lines_request` raise, and
    ``UserInputError`` for too many documents.
    """
    from .limits import MAX_DOCUMENTS

    _check_query(query)
    if path is None and stdin is None:
        read_text(None, None)  # raises: no documents given
    source = "stdin" if path is None or str(path) == "-" else str(path)
    f = stdin if path is None else open_input(path, stdin)
    docs, docids = [], []
    try:
        for number, raw in enumerate(f):
            if number == 0:
                first = raw
                raw = raw.removeprefix(BOM)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UserInputError(
                    f"{source} line {number + 1} is not valid UTF-8 (byte {exc.start}); convert it first, "
                    f"e.g. {iconv_hint(first[:4])}"
                ) from None
            line = line.removesuffix("\n").removesuffix("\r")
            if line.strip():
                if depth is not None and len(docs) >= depth:
                    break  # --depth: the documents past it are not reranked, so not read
                if len(docs) == MAX_DOCUMENTS:
                    raise UserInputError(
                        f"{source} holds more than {MAX_DOCUMENTS} documents, the limit for one query; "
                        f"pass --depth {MAX_DOCUMENTS} (or less) to rerank its first documents"
                    )
                docs.append(line)
                docids.append(str(number))
    except OSError as exc:
        raise UserInputError(f"{source} could not be read: {exc.strerror or exc}; check the file") from None
    finally:
        if f is not stdin:
            f.close()
    return Request(qid="q0", query=query, documents=docs, docids=docids)


def _check_query(query: str | None) -> None:
    if query is None:
        raise UserInputError("--query is required with --docs or stdin input")
    if not query.strip():
        raise UserInputError("the query is empty; pass a non-empty --query")
    check_text(query, "--query")


def lines_request(text: str, query: str | None) -> Request:
    """One document per non-blank line; a document's docid is its 0-based line number.

    Lines end at ``\n`` (an ``\r`` before it is dropped) and nowhere else, so
    the numbering is the one ``sed -n`` and editors show, minus one. Blank
    lines (empty or only whitespace) are skipped but keep their number, so a
    docid names the same line whatever surrounds it.
    """
    _check_query(query)
    text = text.removeprefix("\ufeff")  # a byte-order mark is not part of document 0
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
    text = text.removeprefix("\ufeff")  # a byte-order mark (read_text drops it already)
    stripped = text.lstrip()
    if stripped.startswith("["):
        records = loads(text, source, position=True)
        if isinstance(records, list):
            for i, record in enumerate(records):
                check_record(record, f"{source} record {i + 1}")
    else:
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            records.append(loads(line, f"{source} line {n}"))
            check_record(records[-1], f"{source} line {n}")
    from .formats.shapes import requests_from_records  # one shape per file, rank_llm's included

    return requests_from_records(records, source, query, _record)


def _record(r, i: int, source: str, query: str | None) -> Request:
    """One RankGPT ``hits`` or ``documents`` record; fields are checked as ``formats.shapes`` says."""
    from .formats.shapes import id_field, json_type, text_field

    where = f"{source} record {i + 1}"
    if not isinstance(r, dict):
        raise UserInputError(f"{where} is not a JSON object")
    if query:
        q = query
    elif "query" not in r:
        raise UserInputError(f'{where} has no "query" string; add one or pass --query')
    else:
        q = text_field(r["query"], where, "query")
    check_text(q, "--query" if query else f"{where}: the query")
    if "hits" in r:
        hits = r["hits"]
        if not isinstance(hits, list) or not all(isinstance(h, dict) and "content" in h for h in hits):
            raise UserInputError(f'{where}: "hits" must be a list of objects with "content"')
        docs = [text_field(h["content"], f"{where} hit {j + 1}", "content") for j, h in enumerate(hits)]
        docids = [id_field(h.get("docid", j), f"{where} hit {j + 1}", "docid") for j, h in enumerate(hits)]
        qid = r["qid"] if "qid" in r else hits[0].get("qid", i) if hits else i
    elif "documents" in r:
        raw = r["documents"]
        if not isinstance(raw, list):
            raise UserInputError(f'{where}: "documents" must be a list of strings (or {{"text": ...}} objects)')
        docs = []
        for j, d in enumerate(raw):
            if isinstance(d, dict) and "text" in d:
                docs.append(text_field(d["text"], f"{where} document {j + 1}", "text"))
            elif not isinstance(d, str):
                raise UserInputError(
                    f'{where} document {j + 1} must be a string or {{"text": "..."}}, not {json_type(d)}'
                )
            else:
                docs.append(d)
        docids = [str(j) for j in range(len(docs))]
        qid = r.get("qid", i)
    else:
        raise UserInputError(f'{where} has neither "hits" nor "documents"')
    qid = id_field(qid, where, "qid")
    check_text(qid, f"{where}: the qid")
    for j, d in enumerate(docs):
        check_text(d, f"{where}: document {j}")
        check_text(docids[j], f"{where}: the docid of document {j}")
    return Request(qid=qid, query=q, documents=docs, docids=docids)
