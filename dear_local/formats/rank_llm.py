"""rank_llm's request and result records, in and out.

rank_llm (castorini/rank_llm) keeps a rerank request as one JSON object per line, or as one
JSON array of them (its ``.json`` files)::

    {"query": {"text": str, "qid": str | int},
     "candidates": [{"docid": str | int, "score": float, "doc": {...}}, ...]}

Its results have the same shape with the candidates in their new order, so a result file can
be read back as a request. dear-local writes results that way too: every candidate keeps its
``docid`` (with its JSON type) and its ``doc`` object untouched, and ``score`` becomes the
rerank score (in [0, 1], falling with rank; see ``RerankResult.score``).

A candidate's passage text is read as rank_llm's own readers do: the first of the ``doc``
fields ``text``, ``segment``, ``contents``, ``content``, ``body``, ``passage``; a non-empty
``title`` goes in front as ``"Title: {title} Content: {text}"`` (:func:`dear_local.contract.titles.join_title`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from ..contract.titles import join_title
from ..errors import UserInputError
from .request import Request
from .ids import id_field, text_field

DOC_TEXT_FIELDS = ("text", "segment", "contents", "content", "body", "passage")


@dataclass
class RankLLMRequest(Request):
    """A ``Request`` read from a rank_llm record, with what is needed to write its result.

    ``query_record`` is the record's ``query`` object; ``candidates`` its candidate objects,
    in input order (``candidates[i]`` is ``documents[i]``).
    """

    query_record: dict = field(default_factory=dict)
    candidates: list[dict] = field(default_factory=list)


def _is_id(value: Any) -> bool:
    return isinstance(value, (str, int)) and not isinstance(value, bool)


def doc_text(doc: Any, where: str) -> str:
    """The passage text of a rank_llm ``doc`` object (or a Pyserini/BEIR corpus record).

    Raises ``UserInputError`` when ``doc`` is not an object, holds none of the text fields, or
    holds a text or title that is not a string (a null title counts as none; see ``formats.shapes``).
    """
    if not isinstance(doc, dict):
        raise UserInputError(f'{where}: "doc" must be a JSON object such as {{"contents": "..."}}')
    for key in DOC_TEXT_FIELDS:
        if key in doc:
            text = doc[key]
            break
    else:
        raise UserInputError(
            f"{where} has no passage text; put it under one of "
            + ", ".join(f'"{k}"' for k in DOC_TEXT_FIELDS)
        )
    text = text_field(text, where, key)
    title = doc.get("title")
    if title is not None and text_field(title, where, "title"):
        text = join_title(title, text)
    return text


def request_from_record(record: dict, where: str, query: str | None = None) -> RankLLMRequest:
    """One rank_llm request record as a ``RankLLMRequest``; ``query`` overrides its text.

    ``where`` names the record in error messages (e.g. ``"rl.jsonl record 3"``). Raises
    ``UserInputError`` for a missing or mistyped ``query``, ``candidates``, ``docid`` or ``doc``.
    """
    q = record.get("query")
    if not isinstance(q, dict) or "text" not in q or "qid" not in q:
        raise UserInputError(f'{where}: "query" must be an object {{"text": "...", "qid": "..."}}')
    text_field(q["text"], where, "query.text")
    id_field(q["qid"], where, "query.qid")
    candidates = record.get("candidates")
    if not isinstance(candidates, list):
        raise UserInputError(f'{where}: "candidates" must be a list of {{"docid", "score", "doc"}} objects')
    texts, docids = [], []
    for j, c in enumerate(candidates):
        cwhere = f"{where} candidate {j + 1}"
        if not isinstance(c, dict) or not _is_id(c.get("docid")):
            raise UserInputError(f'{cwhere} needs a "docid" (a string or an integer)')
        score = c.get("score")
        if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
            raise UserInputError(f'{cwhere}: "score" must be a number')
        texts.append(doc_text(c.get("doc"), cwhere))
        docids.append(str(c["docid"]))
    return RankLLMRequest(
        qid=str(q["qid"]),
        query=query or q["text"],
        documents=texts,
        docids=docids,
        query_record=q,
        candidates=candidates,
    )


def result_record(request: Request, order: Sequence[int], scores: Sequence[float]) -> dict:
    """The rank_llm result record of ``request`` reranked.

    ``order`` holds indices into ``request.documents``, best first, and ``scores`` their rerank
    scores, in the same order. A request read from another shape gets
    ``{"text": query, "qid": qid}`` and ``{"contents": text}`` docs.
    """
    if isinstance(request, RankLLMRequest):
        query = {**request.query_record, "text": request.query}
        originals = request.candidates
    else:
        query = {"text": request.query, "qid": request.qid}
        originals = [
            {"docid": d, "score": None, "doc": {"contents": t}}
            for d, t in zip(request.docids, request.documents)
        ]
    return {
        "query": query,
        "candidates": [{**originals[i], "score": float(s)} for i, s in zip(order, scores)],
    }
