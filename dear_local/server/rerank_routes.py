"""The rerank endpoints, one per path, each taking the shapes its clients send.

- ``POST /v1/rerank``: Cohere v1 and Jina (``documents``), answered as now; TEI (``texts``), answered
  with TEI's bare array. LocalAI serves Jina here, so clients set up for LocalAI work too.
- ``POST /v2/rerank``: Cohere v2.
- ``POST /rerank``: Infinity and LocalAI-style clients (``documents``), answered in Infinity's shape
  (:mod:`.infinity`); TEI (``texts``), answered with TEI's bare array (:mod:`.tei`).

TEI's ``GET /info`` sits with ``GET /v1/models`` in :mod:`.app`.

Which shape a body is: :mod:`.shapes`. Every one takes the ``X-Deadline`` header (:mod:`.deadlines`);
an answer the deadline cut short carries ``X-Dear-Local-Partial: K/N windows``.
"""

from __future__ import annotations

from functools import partial
from typing import Optional, Union

from fastapi import FastAPI, Header, Request, Response

from ..reranker import RerankResponse
from .deadlines import HEADER, HEADER_DOC, PARTIAL_HEADER, partial_header
from .infinity import InfinityResponse
from .schemas import RerankRequestV2, RerankResponseV1, RerankResponseV2
from .service import RerankService
from .shapes import RerankBody
from .tei import TeiRank, TeiRerankRequest, tei_ranks

_DEADLINE = Header(None, alias=HEADER, description=HEADER_DOC)


def _mark_partial(response: Response, resp: RerankResponse) -> None:
    if not resp.ranking.complete:
        response.headers[PARTIAL_HEADER] = partial_header(len(resp.windows), resp.ranking.planned)


def add_rerank_routes(app: FastAPI, service: RerankService, auth: list, responses: dict) -> None:
    """Add the endpoints above to ``app``; ``auth`` guards each of them, ``responses`` documents the errors."""
    post = partial(app.post, response_model_exclude_none=True, responses=responses, dependencies=auth)

    async def ranked(body, request: Request, response: Response) -> tuple[RerankResponse, list[str]]:
        """Rank a body in one of the ``documents`` shapes; the answer is the caller's to shape."""
        docs = body.texts()
        resp = await service.rerank(request, body.query, docs, body.top_n)
        _mark_partial(response, resp)
        return resp, docs

    async def tei(body: TeiRerankRequest, request: Request, response: Response) -> list[TeiRank]:
        resp = await service.rerank(request, body.query, list(body.texts), None)
        _mark_partial(response, resp)
        return tei_ranks(resp, body.return_text)

    def documents_or_texts(path: str, name: str, shape, answer, summary: str) -> None:
        """A path for the ``documents`` shapes, answered in ``shape`` by ``answer(resp, docs, body)``,
        and for TEI's ``texts``, answered with TEI's bare array."""

        @post(path, name=name, response_model=Union[shape, list[TeiRank]], summary=summary)
        async def rerank(body: RerankBody, request: Request, response: Response,
                         _deadline: Optional[str] = _DEADLINE):
            if isinstance(body, TeiRerankRequest):
                return await tei(body, request, response)
            resp, docs = await ranked(body, request, response)
            return answer(resp, docs, body)

    documents_or_texts(
        "/v1/rerank", "rerank_v1", RerankResponseV1,
        lambda resp, docs, body: service.response_v1(resp, docs, body.return_documents),
        summary="Rerank documents (Cohere v1 and Jina shapes; TEI's with `texts`)",
    )

    @post("/v2/rerank", response_model=RerankResponseV2, summary="Rerank documents (Cohere v2 shape)")
    async def rerank_v2(body: RerankRequestV2, request: Request, response: Response,
                        _deadline: Optional[str] = _DEADLINE):
        resp, docs = await ranked(body, request, response)
        return service.response_v2(resp, docs, body.return_documents)

    documents_or_texts(
        "/rerank", "rerank_bare", InfinityResponse,
        lambda resp, docs, body: service.response_infinity(resp, docs, body.return_documents, body.model),
        summary="Rerank documents (Infinity shape with `documents`; TEI's with `texts`)",
    )
