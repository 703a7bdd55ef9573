"""Which request shape a JSONL (or JSON array) file holds, decided once per file.

Three shapes are read:

- ``rank_llm``: ``{"query": {"text", "qid"}, "candidates": [{"docid", "score", "doc"}]}``,
  rank_llm's requests and results (see ``formats.rank_llm``);
- ``rankgpt``: ``{"query", "hits": [{"content", "docid"}]}``, RankGPT's and rank_llm's
  retrieve_results files;
- ``documents``: ``{"query", "documents": [str | {"text"}]}``.

Every record of a file must have the file's shape; a record of none of them gets one message
that lists all three.

Every shape checks its fields the same way (:func:`text_field`, :func:`id_field`): a text (a query,
a passage, a title) must be a JSON string, and an id (qid, docid) a string or an integer; null, a
number, a list, an object or a boolean is refused with the record and the field named, never
turned into text such as ``"None"`` or ``"['x']"``.
"""

from __future__ import annotations

from typing import Callable

from ..errors import UserInputError
from .ids import id_field, id_text, json_type, text_field  # noqa: F401 - the field checks, importable from here too
from .request import Request

SHAPES = {
    "rank_llm": '{"query": {"text", "qid"}, "candidates": [{"docid", "score", "doc": {"contents"}}]} (rank_llm)',
    "rankgpt": '{"query", "hits": [{"content", "docid"}]} (RankGPT)',
    "documents": '{"query", "documents": ["..."]}',
}

_KEYS = (("candidates", "rank_llm"), ("hits", "rankgpt"), ("documents", "documents"))


def shape_of(record) -> str | None:
    """The name of ``record``'s shape (a key of ``SHAPES``), or None for none of them."""
    if isinstance(record, dict):
        for key, shape in _KEYS:
            if key in record:
                return shape
    return None


def accepted() -> str:
    """The accepted shapes, for error messages."""
    return "one JSON object per line (or one JSON array of them) shaped as " + "; or ".join(SHAPES.values())


def file_shape(records: list, source: str) -> str | None:
    """The shape every record of ``source`` has; None for a file with no records.

    Raises ``UserInputError`` naming the first record that has an unknown shape, or a shape other
    than the first record's.
    """
    shape = None
    for i, record in enumerate(records):
        this = shape_of(record)
        if this is None:
            raise UserInputError(
                f"{source} record {i + 1} is not a request dear-local reads; --jsonl takes {accepted()}. "
                "For a TREC run pass --run with --topics and --corpus"
            )
        if shape is None:
            shape = this
        elif this != shape:
            raise UserInputError(
                f"{source} record {i + 1} has the {this} shape but record 1 has the {shape} shape; "
                "keep one shape per file"
            )
    return shape


def requests_from_records(
    records: list,
    source: str,
    query: str | None,
    read_other: Callable[[dict, int, str, str | None], Request],
) -> list[Request]:
    """Turn parsed records into requests with the reader of the file's shape.

    rank_llm records are read by ``formats.rank_llm``; the other shapes by ``read_other``
    (``record, index, source, query``). ``query``, when given, overrides every record's query.
    """
    shape = file_shape(records, source)
    if shape == "rank_llm":
        from .rank_llm import request_from_record

        return [request_from_record(r, f"{source} record {i + 1}", query) for i, r in enumerate(records)]
    return [read_other(r, i, source, query) for i, r in enumerate(records)]
