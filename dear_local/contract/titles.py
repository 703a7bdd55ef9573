"""A document's title inside its text: how the input formats join them, and how a pointwise ranker splits them.

rank_llm's convention (``rank_llm.data``): a candidate with a non-empty title is ranked as
``"Title: {title} Content: {text}"``. dear-local's input formats (rank_llm and RankGPT JSONL, BEIR and
Pyserini corpora) join a title that way, so the listwise prompt reads what rank_llm's would.
DeAR-P's card reads a title in its own place, ``"document: {title} {text}"``
(``templates/pointwise/dear-p.toml``), so the pointwise first stage splits the join back.

The join is lossy: a title holding ``" Content: "`` splits at its first occurrence, and a plain
text that happens to start with ``"Title: "`` and hold ``" Content: "`` reads as titled.
"""

from __future__ import annotations

PREFIX = "Title: "
SEPARATOR = " Content: "


def join_title(title: str, text: str) -> str:
    """``text`` with a non-empty ``title`` in front, as rank_llm ranks it; ``text`` alone without one."""
    return f"{PREFIX}{title}{SEPARATOR}{text}" if title else text


def split_title(document: str) -> tuple[str, str]:
    """``(title, text)`` of a document :func:`join_title` made; ``("", document)`` for any other."""
    if document.startswith(PREFIX):
        title, sep, text = document[len(PREFIX):].partition(SEPARATOR)
        if sep:
            return title, text
    return "", document
