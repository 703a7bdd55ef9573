"""``dear-local serve``: the HTTP rerank API (needs the ``serve`` extra)."""

from __future__ import annotations

from enum import Enum
from typing import Optional

import typer

from ..errors import UserInputError
from ..limits import MAX_BODY_BYTES, MAX_DOCUMENTS, MAX_IN_FLIGHT, MAX_QUEUE
from ..limits import MAX_SERVE_TIMEOUT as MAX_TIMEOUT
from .messages import warn
from ..run_options import RunOptions
from ..settings import DEFAULT_HOST, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_QUEUE, DEFAULT_PORT, DEFAULT_TIMEOUT, ENV_API_KEY
from .options import ListwiseModelOption, check_model_given, finite, flag_names, with_run_options


class LogLevel(str, Enum):
    """uvicorn's log levels."""

    critical = "critical"
    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"
    trace = "trace"


@with_run_options
def serve(
    model: ListwiseModelOption = None,
    host: str = typer.Option(DEFAULT_HOST, "--host", help="Address to bind; the default only accepts local clients."),
    port: int = typer.Option(DEFAULT_PORT, "--port", min=0, max=65535, help="Port to listen on (0: any free port)."),
    api_key: Optional[str] = typer.Option(
        None, "--api-key", help=f"Require 'Authorization: Bearer KEY' (default: ${ENV_API_KEY}, else no key).",
        show_default=False,
    ),
    max_queue: int = typer.Option(DEFAULT_MAX_QUEUE, "--max-queue", min=0, max=MAX_QUEUE, help="Requests that may wait behind the running one; more get 429."),
    timeout: float = typer.Option(DEFAULT_TIMEOUT, "--timeout", min=0.001, max=MAX_TIMEOUT, callback=finite, help="Seconds a request may take, waiting included; then 504."),
    deadline: Optional[float] = typer.Option(
        None, "--deadline", min=0.001, max=MAX_TIMEOUT, callback=finite, show_default=False,
        help="Seconds after which a request is answered with the ranking so far (at most --timeout; "
        "a request's X-Deadline header overrides it). Default: none.",
    ),
    max_documents: int = typer.Option(MAX_DOCUMENTS, "--max-documents", help="Most documents per request (1 to 1000)."),
    max_body_bytes: int = typer.Option(DEFAULT_MAX_BODY_BYTES, "--max-body-bytes", min=1024, max=MAX_BODY_BYTES, help="Largest request body; bigger gets 413."),
    in_flight: Optional[int] = typer.Option(
        None, "--in-flight", min=1, max=MAX_IN_FLIGHT,
        help="Requests ranked at once (default: 1 with a local model, 4 per --server with servers).",
    ),
    log_level: LogLevel = typer.Option(LogLevel.info, "--log-level", help="uvicorn's log level."),
    options: RunOptions = RunOptions(),
) -> None:
    """Serve a rerank API in the shapes RAG apps speak: Cohere, Jina, TEI, Infinity (docs at /docs).

    POST /v1/rerank and /rerank take Cohere v1/Jina/Infinity bodies ("documents") and TEI bodies
    ("texts"), POST /v2/rerank Cohere v2; GET /info answers as TEI does. Client recipes: docs/clients.md.

    With --server (repeatable) the model runs on llama-server, vLLM or SGLang and this API is
    stateless, so many `serve` processes can sit behind any load balancer; --model then names
    the local GGUF whose tokenizer builds the prompts. With --first-stage, a pointwise ranker
    (DeAR-P) scores every document first, and relevance_score is its probability of relevance.
    """
    check_model_given(model, options)
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        from ..errors import missing_extra

        raise missing_extra("fastapi", "serve") from None
    from ..server import ServerSettings, bind_warning, create_app
    from ..server.runner import bound_port, listen
    from ..server.served import served
    from ..server.runner import serve as run
    from ..settings import get_settings

    if api_key is not None and not api_key:
        raise UserInputError("--api-key is empty, which would serve without a key; pass a non-empty key, or leave --api-key out")
    settings = ServerSettings(
        model=model, host=host, port=port, api_key=api_key or get_settings().api_key,
        max_queue=max_queue, timeout=timeout, deadline=deadline, max_documents=max_documents,
        max_body_bytes=max_body_bytes,
        run=options,
        in_flight=in_flight or (4 * len(options.servers) if options.servers else 1),
    )
    # Bind before anything else, so a port in use is the only line printed; uvicorn gets these sockets.
    sockets = listen(settings.host, settings.port)
    try:
        warning = bind_warning(settings.host, settings.api_key)
        if warning:
            warn(warning)
        with flag_names():
            app = create_app(settings)
        typer.echo(banner(settings, served(app.state.service.reranker), bound_port(sockets)), err=True)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    run(app, settings, sockets, log_level=log_level.value)


def banner(settings, profile, port: int) -> str:
    """The start-up line: model, template/decoding (``profile``: a Profile, or what
    :func:`~dear_local.server.served.served` says runs), any first stage, address and whether a key is
    needed (never the key itself); ``--server`` URLs are shown with their credentials masked."""
    from ..redact import redact, redact_url
    from ..terminal import printable

    host = settings.host.strip("[]")
    shown = f"[{host}]" if ":" in host else host
    servers = settings.run.servers
    via = f" via {', '.join(redact_url(u) for u in servers)}" if servers else ""
    first = getattr(profile, "first_stage", None)
    depth = getattr(profile, "listwise_depth", None)
    behind = f" behind first stage {first} (listwise depth {depth})" if first and depth is not None else ""
    line = (
        f"serving {settings.model_name} ({profile.template}/{profile.decoding}){behind} on http://{shown}:{port}{via} "
        f"(docs at /docs; key {'required' if settings.api_key else 'not required'})"
    )
    return printable(redact(line, [settings.api_key or ""]))


def register(app: typer.Typer) -> None:
    app.command()(serve)
