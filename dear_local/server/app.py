"""The FastAPI app: ``create_app(settings)`` loads the model once and wires the routes.

Endpoints:

- ``POST /v1/rerank``: Cohere v1 and Jina request/response shapes; TEI's with ``texts``.
- ``POST /v2/rerank``: Cohere v2.
- ``POST /rerank``: Infinity's shape with ``documents``; TEI's with ``texts``.
- ``GET /info``: TEI's model info.
- ``GET /health``, ``GET /v1/models``, and the OpenAPI docs (``/docs``, ``/openapi.json``).

The rerank endpoints are in :mod:`.rerank_routes`. Every error is JSON ``{"error": code,
"message": text}``: 400 for a body that is not JSON (bodies are read as JSON whatever their
``Content-Type``), 401 for a missing or wrong key, 413 for a body over the limit, 422 for a
request that is JSON but not a valid rerank request, 429 (with ``Retry-After``) when the queue
is full, 503 while shutting down, when the inference servers are down, or (with ``Retry-After``)
when the queue wait alone would pass the request's deadline, and 504 past ``--timeout``.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from functools import partial

import anyio
from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..reranker import Reranker
from .auth import require_key
from .config import ServerSettings
from .json_body import JsonBodies
from .paths import ForgivingPaths
from .limits import BodySizeLimit
from .rerank_routes import add_rerank_routes
from .schemas import ErrorBody, Health, ModelCard, ModelList, QueueInfo
from .served import served
from .service import ApiError, RerankService
from .shapes import field_path
from .tei import TeiInfo, tei_info

DESCRIPTION = """\
A local rerank API over a DeAR listwise reranker running in llama.cpp, in the shapes RAG applications speak:
Cohere v1 and Jina (`POST /v1/rerank`), Cohere v2 (`POST /v2/rerank`), Infinity (`POST /rerank` with
`documents`) and Hugging Face text-embeddings-inference (`POST /rerank` or `/v1/rerank` with `texts`, `GET /info`).

`relevance_score` is in [0, 1]. With a pointwise first stage (`serve --first-stage`) it is that ranker's
probability of relevance, the same for a document in any request. Otherwise it decreases with rank: with
the `first-token` decoding mode and a request that fits in one window it is the model's first-token
probability for the document's identifier, else it is derived from rank: (n - rank) / n. `meta.scores`
says which.
Documents longer than the prompt template's passage limit (300 characters or 256 tokens for `card`,
300 words or 640 tokens for `rankgpt-chat`, whichever is shorter) are cut before ranking; such results carry `truncated: true` and `meta.warnings`
names them. Requests run one at a time, first come first served. A request with a deadline (the `X-Deadline`
header or the server's --deadline) is answered before it, with the ranking as far as it got (`meta.complete`).
"""

_ERRORS = {
    400: ("invalid_json", "The body is not valid JSON."),
    401: ("unauthorized", "The API key is missing or wrong."),
    413: ("body_too_large", "The body is larger than --max-body-bytes."),
    422: ("invalid_request", "The JSON is not a valid rerank request."),
    429: ("queue_full", "Too many requests are waiting; see Retry-After."),
    503: ("shutting_down", "The server is shutting down, its inference servers are down, or the queue wait alone "
          "would pass the request's deadline (`deadline_unreachable`); see Retry-After."),
    504: ("timeout", "The request took longer than --timeout."),
}
SEND_JSON = "send the request as a JSON object (Content-Type: application/json)"
RERANK_RESPONSES = {code: {"model": ErrorBody, "description": desc} for code, (_, desc) in _ERRORS.items()}


def create_app(settings: ServerSettings, reranker: Reranker | None = None) -> FastAPI:
    """Build the app. The model is loaded here, once, unless a ``reranker`` is passed in.

    A passed-in reranker stays the caller's to close; one loaded here is closed
    when the app shuts down, after the request in flight has finished.
    """
    owned = reranker is None
    if reranker is None:
        reranker = Reranker.from_options(settings.model, settings.run)
    service = RerankService(reranker, settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        service.queue.start()
        try:
            yield
        finally:
            service.shutting_down = True
            await anyio.to_thread.run_sync(service.queue.close)  # waits for the request in flight
            if owned:
                reranker.close()

    app = FastAPI(
        title="dear-local",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(JsonBodies)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(ForgivingPaths)
    _add_error_handlers(app)
    _add_routes(app, service, settings)
    _document_limits(app, settings.max_documents)
    return app


def _served_routes(app: FastAPI) -> str:
    """The app's documented routes for a 404, read from the app: ``POST /rerank, ... and /v2/rerank, GET ...``."""
    by_method: dict[str, set[str]] = {}
    for route in app.routes:
        if getattr(route, "include_in_schema", False):
            for method in getattr(route, "methods", ()) or ():
                by_method.setdefault(method, set()).add(route.path)

    def listed(paths: set[str]) -> str:
        paths = sorted(paths)
        return paths[0] if len(paths) == 1 else ", ".join(paths[:-1]) + " and " + paths[-1]

    return ", ".join(f"{method} {listed(by_method[method])}" for method in ("POST", "GET") if method in by_method)


def _shown_path(request) -> str:
    """The request's path for an error message: as sent, cut to 120 characters."""
    path = request.url.path
    return path if len(path) <= 120 else path[:117] + "..."


def _add_routes(app: FastAPI, service: RerankService, settings: ServerSettings) -> None:
    """The endpoints: the rerank ones (:mod:`.rerank_routes`), ``/info``, ``/v1/models`` and ``/health``."""
    reranker = service.reranker
    auth = [Depends(require_key(settings.api_key))] if settings.api_key else []
    add_rerank_routes(app, service, auth, RERANK_RESPONSES)
    keyed_get = partial(app.get, responses={401: RERANK_RESPONSES[401]}, dependencies=auth)

    @keyed_get(
        "/info",
        response_model=TeiInfo,
        summary="The served model and its limits, as text-embeddings-inference's /info gives them",
    )
    async def info():
        return tei_info(service)

    @keyed_get("/v1/models", response_model=ModelList, summary="The served model and its profile")
    async def models():
        s = served(reranker)
        return ModelList(data=[ModelCard(
            id=service.model_name, template=s.template, decoding=s.decoding, window=s.window, stride=s.stride,
            max_documents=settings.max_documents, first_stage=s.first_stage, listwise_depth=s.listwise_depth,
        )])

    @app.get(
        "/health",
        response_model=Health,
        responses={503: {"model": Health, "description": "The server is shutting down."}},
        summary="Liveness and queue state (no key needed)",
    )
    async def health():
        q = service.queue
        body = Health(
            status="shutting_down" if service.shutting_down else "ok",
            model=service.model_name,
            queue=QueueInfo(
                pending=q.pending, max_pending=q.max_pending, busy=q.busy,
                completed=q.stats.completed, dropped=q.stats.dropped, rejected=q.stats.rejected,
            ),
        )
        return JSONResponse(body.model_dump(), status_code=503 if service.shutting_down else 200)


def _document_limits(app: FastAPI, max_documents: int) -> None:
    """Put this server's --max-documents into the OpenAPI schema as ``maxItems``."""
    build = app.openapi

    def openapi():
        if app.openapi_schema is None:
            schema = build()
            for name, field in (("RerankRequestV1", "documents"), ("RerankRequestV2", "documents"),
                                ("TeiRerankRequest", "texts")):
                props = schema.get("components", {}).get("schemas", {}).get(name, {}).get("properties", {})
                if field in props:
                    props[field]["maxItems"] = max_documents
        return app.openapi_schema

    app.openapi = openapi


def _error(status: int, code: str, message: str, headers=None, details=None) -> JSONResponse:
    body = ErrorBody(error=code, message=message, details=details)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request, exc: ApiError):
        return _error(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            ctx = errors[0].get("ctx") or {}
            reason = ctx.get("error", "parse error")
            return _error(400, "invalid_json", f"the body is not valid JSON ({reason}); {SEND_JSON}")
        details = [_describe(e) for e in errors]
        shown = "; ".join(details[:3]) + (f"; and {len(details) - 3} more" if len(details) > 3 else "")
        return _error(422, "invalid_request", f"invalid rerank request: {shown}", details=details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):
        codes = {400: "invalid_json", 404: "not_found", 405: "method_not_allowed"}
        code = codes.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if exc.status_code == 404:
            message = (f"no route {_shown_path(request)}; dear-local serves {_served_routes(request.app)}: give "
                       "clients the base URL http://HOST:PORT, or the full URL of one of these where a client asks "
                       "for the endpoint")
        elif exc.status_code == 405:
            message = f"{_shown_path(request)} does not take {request.method}; rerank requests are POSTs with a JSON body"
        if exc.status_code == 400 and "body" in message:  # FastAPI's "error parsing the body": e.g. not UTF-8
            message = f"the body is not valid JSON (it could not be read as UTF-8 JSON text); {SEND_JSON}"
        return _error(exc.status_code, code, message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(_request, exc: Exception):
        return _error(500, "internal_error", f"unexpected {type(exc).__name__}; this is a bug in dear-local")


def _describe(error: dict) -> str:
    loc = field_path(error.get("loc", ()))
    if error.get("type") == "string_pattern_mismatch" and loc == "query":
        return "query: must not be empty or only whitespace"
    if loc == "body" and error.get("type") in ("missing", "model_attributes_type", "dict_type"):
        return f"body: {'missing' if error.get('type') == 'missing' else 'not a JSON object'}; {SEND_JSON}"
    msg = error.get("msg", "invalid")
    return f"{loc}: {msg.removeprefix('Value error, ')}"
