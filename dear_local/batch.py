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

from .decoding.remote import RemoteModel
from .formats.request import Request
from .reranker import Reranker, RerankResponse

Done = Callable[[int, Request, RerankResponse], None]


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
    if in_flight <= 1 or not isinstance(reranker.backend, RemoteModel):
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
