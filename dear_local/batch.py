"""Many queries through one reranker: one at a time locally, several in flight on servers.

With a server backend, ``in_flight`` queries run at once on a thread pool: the windows of
different queries are concurrent (spread over the fleet by
:class:`~dear_local.remote.fleet.Fleet`), while each query's windows keep their sliding-window
order. Results come back to the caller's thread as each query finishes, in whatever order
they finish, with their input position, so a resumable output can write each at once.
At most ``2 × in_flight`` queries are started ahead of the last one handed back.

When a query fails (say every server is down), no new query starts, the queries already
running finish and are handed back, and the first error is raised: work already done is
kept.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Callable, Iterable

from .backends.base import capabilities_of
from .errors import UserInputError
from .formats.ids import check_line_id
from .formats.request import Request
from .limits import MAX_DOCUMENTS
from .reranker import Reranker, RerankResponse

Done = Callable[[int, Request, RerankResponse], None]


def check_requests(requests: list[Request], fmt: str, depth: int | None = None) -> None:
    """Refuse a batch that would fail or write a broken file part way, before any query runs.

    ``fmt`` is the output format; ``depth`` the ``--depth`` given (None when not given). Input
    record ``N`` counts from 1, in input order.

    Raises ``UserInputError`` naming the record and the query id for:

    - a query id used by two records, or a docid listed twice for one query (their lines would
      be ambiguous in every format);
    - with ``fmt == "trec"``, a query id or docid that is empty or holds whitespace or a control
      character (see ``formats.ids``), which would break the run file's columns;
    - a query with more than ``MAX_DOCUMENTS`` documents (naming ``--depth``).
    """
    first: dict[str, int] = {}
    for n, req in enumerate(requests, 1):
        where = f'input record {n} (query "{req.qid}")'
        if req.qid in first:
            raise UserInputError(
                f'query id "{req.qid}" is used by input records {first[req.qid]} and {n}; give each query its own qid'
            )
        first[req.qid] = n
        if len(req.documents) > MAX_DOCUMENTS:
            cut = f" after --depth {depth}" if depth is not None else ""
            raise UserInputError(
                f"{where} has {len(req.documents)} documents{cut}, more than the limit of {MAX_DOCUMENTS}; "
                f"pass --depth {MAX_DOCUMENTS} (or less) to rerank each query's first documents"
            )
        if fmt == "trec":
            check_line_id(req.qid, f"{where}: the query id")
        seen: dict[str, int] = {}
        for j, docid in enumerate(req.docids):
            if fmt == "trec":
                check_line_id(docid, f"{where}: the docid of document {j + 1}")
            if docid in seen:
                raise UserInputError(
                    f'{where} lists docid "{docid}" twice (documents {seen[docid]} and {j + 1}); remove the duplicate'
                )
            seen[docid] = j + 1


def _rerank_one(reranker: Reranker, req: Request, top_n: int | None, on_window) -> RerankResponse:
    return reranker.rerank(req.query, req.documents, top_n=top_n, on_window=on_window)


def run_batch(
    reranker: Reranker,
    requests: Iterable[tuple[int, Request]],
    on_done: Done,
    *,
    in_flight: int = 1,
    top_n: int | None = None,
    on_window: Callable | None = None,
) -> None:
    """Rerank each ``(position, request)``; call ``on_done(position, request, response)`` as each finishes.

    ``in_flight`` > 1 needs a backend that takes concurrent calls (a server backend);
    the local llama.cpp backend holds one evaluation state, so it runs one query at a time.

    Raises:
        whatever a query raised first (``ServerError``, ``ContextOverflowError``, ...), after
        handing back every query that finished.
    """
    if in_flight <= 1 or not capabilities_of(reranker.backend).concurrent_queries:
        for pos, req in requests:
            on_done(pos, req, _rerank_one(reranker, req, top_n, on_window))
        return
    todo = iter(requests)
    running: dict[Future, tuple[int, Request]] = {}
    error: BaseException | None = None
    with ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="dear-local-query") as pool:
        while True:
            while error is None and len(running) < 2 * in_flight:
                item = next(todo, None)
                if item is None:
                    break
                running[pool.submit(_rerank_one, reranker, item[1], top_n, on_window)] = item
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                pos, req = running.pop(fut)
                if fut.cancelled():
                    continue
                exc = fut.exception()
                if exc is not None:
                    if error is None:
                        error = exc
                        for queued in running:  # not started yet: drop them
                            queued.cancel()
                    continue
                on_done(pos, req, fut.result())
    if error is not None:
        raise error
