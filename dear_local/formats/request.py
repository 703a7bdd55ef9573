"""One query to rerank, whatever file shape it came from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Request:
    """A query with its candidate documents, in first-stage order; ``docids[i]`` names ``documents[i]``."""

    qid: str
    query: str
    documents: list[str]
    docids: list[str]
