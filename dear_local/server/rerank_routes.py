"""The rerank endpoints, one per path, each taking the shapes its clients send.

- ``POST /v1/rerank``: Cohere v1 and Jina (``documents``), answered as now; TEI (``texts``), answered
  with TEI's bare array. LocalAI serves Jina here, so clients set up for LocalAI work too.
- ``POST /v2/rerank``: Cohere v2.
- ``POST /rerank``: Infinity and LocalAI-style clients (``documents``), answered in Infinity's shape
  (:mod:`.infinity`); TEI (``texts``), answered with TEI's bare array (:mod:`.tei`).
- ``GET /info``: TEI's model info, with this server's limits.

Which shape a body is: :mod:`.shapes`. Every one takes the ``X-Deadline`` header (:mod:`.deadlines`);
an answer the deadline cut short carries ``X-Dear-Local-Partial: K/N windows``.
"""

from __future__ import annotations

from typing import Optional, Union

from fastapi import FastAPI, Header, Request, Response

from ..reranker import RerankResponse
from .deadlines import HEADER, HEADER_DOC, PARTIAL_HEADER, partial_header
from .infinity import InfinityResponse
from .schemas import RerankRequestV2, RerankResponseV1, RerankResponseV2
from .service import RerankService
from .shapes import RerankBody
from .tei import TeiInfo, TeiRank, TeiRerankRequest, tei_info, tei_ranks

_DEADLINE = Header(None, alias=HEADER, description=HEADER_DOC)


def _mark_partial(response: Response, resp: RerankResponse) -> None:
    if not resp.ranking.complete:
        response.headers[PARTIAL_HEADER] = partial_header(len(resp.windows), resp.ranking.planned)


def add_rerank_routes(app: FastAPI, service: RerankService, auth: list, responses: dict) -> None:
    """Add the endpoints above to ``app``; ``auth`` guards each of them, ``responses`` documents the errors."""

    async def tei(body: TeiRerankRequest, request: Request, response: Response) -> list[TeiRank]:
        resp = await service.rerank(request, body.query, list(body.texts), None)
        _mark_partial(response, resp)
        return tei_ranks(resp, body.return_text)

    @app.post(
        "/v1/rerank",
        response_model=Union[RerankResponseV1, list[TeiRank]],
        response_model_exclude_none=True,
        responses=responses,
        dependencies=auth,
        summary="Rerank documents (Cohere v1 and Jina shapes; TEI's with `texts`)",
    )
    async def rerank_v1(body: RerankBody, request: Request, response: Response,
                        _deadline: Optional[str] = _DEADLINE):
        if isinstance(body, TeiRerankRequest):
            return await tei(body, request, response)
        docs = body.texts()
        resp = await service.rerank(request, body.query, docs, body.top_n)
        _mark_partial(response, resp)
        return service.response_v1(resp, docs, body.return_documents)

    @app.post(
        "/v2/rerank",
        response_model=RerankResponseV2,
        response_model_exclude_none=True,
        responses=responses,
        dependencies=auth,
        summary="Rerank documents (Cohere v2 shape)",
    )
    async def rerank_v2(body: RerankRequestV2, request: Request, response: Response,
                        _deadline: Optional[str] = _DEADLINE):
        docs = body.texts()
        resp = await service.rerank(request, body.query, docs, body.top_n)
        _mark_partial(response, resp)
        return service.response_v2(resp, docs, body.return_documents)

    @app.post(
        "/rerank",
        response_model=Union[InfinityResponse, list[TeiRank]],
        response_model_exclude_none=True,
        responses=responses,
        dependencies=auth,
        summary="Rerank documents (Infinity shape with `documents`; TEI's with `texts`)",
    )
    async def rerank_bare(body: RerankBody, request: Request, response: Response,
                          _deadline: Optional[str] = _DEADLINE):
        if isinstance(body, TeiRerankRequest):
            return await tei(body, request, response)
        docs = body.texts()
        resp = await service.rerank(request, body.query, docs, body.top_n)
        _mark_partial(response, resp)
        return service.response_infinity(resp, docs, body.return_documents, body.model)

    @app.get(
        "/info",
        response_model=TeiInfo,
        responses={401: responses[401]},
        dependencies=auth,
        summary="The served model and its limits, as text-embeddings-inference's /info gives them",
    )
    async def info():
        return tei_info(service)

