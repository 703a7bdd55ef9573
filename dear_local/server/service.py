"""Runs rerank requests through the work queue and turns results into API responses.

The event loop never touches the model: it submits a job to the queue and
waits for whichever comes first: the result, the request's deadline (then it
answers with the ranking so far, see :mod:`.deadlines`), ``--timeout`` (504),
or the client disconnecting.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid

from ..errors import ServerError, UserInputError
from ..answer_check import SERVE_FIX, ParseTally
from ..engine import FirstStage, RankingState
from ..prompt import truncation_warning
from ..redact import redact
from ..reranker import RerankResponse, Reranker, response_of
from . import deadlines
from .config import ServerSettings
from .deadlines import Deadline, DeadlineReached
from .infinity import InfinityResponse, InfinityResult
from .served import served
from .queue import Abandoned, QueueClosed, QueueFull, WorkQueue
from .schemas import (
    ApiVersion,
    BilledUnits,
    Meta,
    RerankResponseV1,
    RerankResponseV2,
    RerankResultItem,
    ResultDocument,
    Tokens,
    Usage,
)

RECEIVE_RETRY_SECONDS = 2.0  # only for servers whose receive() does not block after the body
CLIENT_CLOSED = 499  # nginx's code for "the client closed the request"; nobody reads it


class ApiError(Exception):
    """An error answered as ``{"error": code, "message": message}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


log = logging.getLogger("dear_local.server")


class RerankService:
    def __init__(self, reranker: Reranker, settings: ServerSettings) -> None:
        self.reranker = reranker
        self.settings = settings
        self.queue = WorkQueue(settings.max_queue, workers=settings.in_flight)
        self.shutting_down = False
        # Running mean of one window's seconds (None before the first): a deadline's guess of what the
        # next window costs, before a request has timed one of its own, and of what a window still
        # running past its request's deadline holds the worker for.
        self.window_seconds: float | None = None

    def _timed_window(self, took: float) -> None:
        self.window_seconds = took if self.window_seconds is None else self.window_seconds + 0.3 * (took - self.window_seconds)

    @property
    def model_name(self) -> str:
        return self.settings.model_name

    def check_documents(self, documents: list[str]) -> None:
        limit = self.settings.max_documents
        if len(documents) > limit:
            raise ApiError(
                422, "too_many_documents",
                f"{len(documents)} documents is more than this server's limit of {limit}; "
                "send a shortlist (e.g. a retriever's top 100)",
            )

    def deadline(self, request) -> Deadline | None:
        """The request's deadline: its ``X-Deadline`` header, else ``--deadline``; 422 for a bad header."""
        headers = request.headers if request is not None else {}
        try:
            return deadlines.deadline_of(headers.get(deadlines.HEADER), self.settings.deadline,
                                         self.settings.timeout, time.monotonic())
        except ValueError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from None

    async def rerank(self, request, query: str, documents: list[str], top_n: int | None) -> RerankResponse:
        """Queue one rerank and wait for it; raise ``ApiError`` for every non-200 outcome.

        With a deadline (:meth:`deadline`) the answer comes back before it, holding the ranking
        so far when the model has not finished (``resp.ranking.complete`` False); a deadline the
        queue wait alone would pass is a 503 with ``Retry-After``, at once.
        """
        self.check_documents(documents)
        deadline = self.deadline(request)
        if deadline is not None:
            self._check_wait(deadline)
        state = RankingState(len(documents))
        job = self._job(query, documents, top_n, state, deadline)
        try:
            queued = self.queue.submit(job, deadline_at=deadline.answer_at if deadline else None)
        except QueueFull as exc:
            raise ApiError(
                429, "queue_full",
                f"the server is busy ({exc.pending} requests waiting); retry after {exc.retry_after} s",
                {"Retry-After": str(exc.retry_after)},
            ) from None
        except QueueClosed:
            raise _shutting_down() from None

        waiter = asyncio.wrap_future(queued.future)
        # Wakes only when the client goes away: no polling, so requests waiting in the
        # queue cost no CPU next to the one the model is running.
        gone = asyncio.ensure_future(_disconnected(request)) if request is not None else None
        limit = deadline.remaining() if deadline is not None else self.settings.timeout
        try:
            done, _ = await asyncio.wait({waiter} | ({gone} if gone else set()), timeout=limit,
                                         return_when=asyncio.FIRST_COMPLETED)
            if waiter not in done:
                self._give_up(queued, waiter)
                if gone is not None and gone in done:
                    raise ApiError(CLIENT_CLOSED, "client_closed_request", "the client disconnected")
                if deadline is not None:  # answer in time with what there is
                    return response_of(state.snapshot(), documents, top_n)
                raise ApiError(
                    504, "timeout",
                    f"the request took more than {self.settings.timeout:g} s, waiting included; "
                    "send fewer documents, retry later, or start the server with a larger --timeout",
                )
        except asyncio.CancelledError:  # the server is cancelling this request
            self._give_up(queued, waiter)
            raise
        finally:
            if gone is not None:
                gone.cancel()
        if waiter.cancelled():
            raise _shutting_down()
        try:
            return waiter.result()
        except DeadlineReached:
            return response_of(state.snapshot(), documents, top_n)
        except UserInputError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from None
        except ServerError as exc:
            log.warning("inference servers failed: %s", redact(str(exc), [self.settings.api_key or ""]))
            raise ApiError(
                503, "upstream_unavailable",
                "the inference servers behind this API did not answer; retry later",
                {"Retry-After": "5"},
            ) from None

    def _job(self, query: str, documents: list[str], top_n: int | None, state: RankingState,
             deadline: Deadline | None):
        """The queue job: rank, stopping when nobody waits any more or the next window would end past the deadline."""
        reranker = self.reranker

        def job(abandoned):
            last = time.monotonic()

            def checkpoint(_window=None):
                nonlocal last
                if abandoned():
                    raise Abandoned()
                now = time.monotonic()
                # a window's time starts when the windows did: a first stage's scoring is not window time
                took, last = now - max(last, state.started_at or last), now
                if _window is not None:
                    self._timed_window(took)
                elif self.window_seconds is not None:
                    took = self.window_seconds  # before the first window: as long as windows have been
                else:
                    return  # nothing timed yet: the first window runs
                left = state.windows_left if _window is not None else len(documents) > 1  # before the start: one at least
                if deadline is not None and left and now + took > deadline.answer_at:
                    raise DeadlineReached()  # the next window, as long as the last one, would end too late

            checkpoint()
            return reranker.rerank(query, documents, top_n=top_n, on_window=checkpoint, state=state)

        return job

    def _check_wait(self, deadline: Deadline) -> None:
        """503 with Retry-After when the wait in the queue alone would pass ``deadline``."""
        wait = self.queue.wait_estimate(overrun=self.window_seconds or 0.0)
        if wait > 0 and wait >= deadline.remaining():
            retry = max(1, math.ceil(wait))
            raise ApiError(
                503, "deadline_unreachable",
                f"the requests ahead of this one would take about {wait:.1f} s, more than its deadline of "
                f"{deadline.seconds:g} s; retry after {retry} s, or allow more time (the {deadlines.HEADER} header, "
                "or serve --deadline)",
                {"Retry-After": str(retry)},
            )

    def _give_up(self, queued, waiter) -> None:
        self.queue.abandon(queued)
        waiter.cancel()  # nobody will read its result or exception

    # -- responses ------------------------------------------------------------
    def _items(self, resp: RerankResponse, return_documents: bool) -> tuple[list[RerankResultItem], list[int]]:
        items, cut = [], []
        for r in resp.results:
            if r.truncated:
                cut.append(r.index)
            items.append(RerankResultItem(
                index=r.index,
                relevance_score=min(1.0, max(0.0, r.score)),
                document=ResultDocument(text=r.text) if return_documents else None,
                truncated=r.truncated,
            ))
        return items, cut

    def _meta(self, resp: RerankResponse, documents: list[str], version: str) -> Meta:
        tmpl = self.reranker.profile.tmpl
        input_tokens = sum(len(w.prompt_ids) for w in resp.windows) + resp.ranking.first_stage_tokens
        output_tokens = sum(len(w.output_ids) for w in resp.windows)
        cut = [i for i, t in enumerate(resp.ranking.truncated) if t]
        first = self.reranker.first_stage
        s = served(self.reranker)
        warnings = [truncation_warning(tmpl, cut, pointwise=first.template if first is not None else None,
                                       listwise=self.reranker.backend is not None)] if cut else []
        tally = ParseTally()
        tally.add(resp.windows)
        if tally.failing:  # the order below is the input order, not the model's
            warnings.append(tally.message(SERVE_FIX))
        if not resp.ranking.complete:
            ran = None if first is None else "done" if resp.ranking.score_kind == FirstStage.KIND else "unfinished"
            warnings.append(deadlines.warning(len(resp.windows), resp.ranking.planned, ran))
        return Meta(
            api_version=ApiVersion(version=version),
            billed_units=BilledUnits(input_tokens=input_tokens, output_tokens=output_tokens),
            tokens=Tokens(input_tokens=input_tokens, output_tokens=output_tokens),
            warnings=warnings,
            complete=resp.ranking.complete,
            scores=(resp.ranking.score_kind or "first-token-probability") if resp.ranking.scores is not None else "rank",
            template=s.template,
            decoding=s.decoding,
            first_stage=s.first_stage,
            parse_status=resp.statuses,
        )

    def response_v1(self, resp: RerankResponse, documents: list[str], return_documents: bool) -> RerankResponseV1:
        items, _ = self._items(resp, return_documents)
        meta = self._meta(resp, documents, "1")
        return RerankResponseV1(
            id=str(uuid.uuid4()),
            model=self.model_name,
            results=items,
            meta=meta,
            usage=Usage(
                total_tokens=meta.tokens.input_tokens + meta.tokens.output_tokens,
                prompt_tokens=meta.tokens.input_tokens,
            ),
        )

    def response_v2(self, resp: RerankResponse, documents: list[str], return_documents: bool) -> RerankResponseV2:
        items, _ = self._items(resp, return_documents)
        return RerankResponseV2(
            id=str(uuid.uuid4()), model=self.model_name, results=items, meta=self._meta(resp, documents, "2")
        )

    def response_infinity(self, resp: RerankResponse, documents: list[str], return_documents: bool,
                          model: str | None) -> InfinityResponse:
        """Infinity's shape (see :mod:`.infinity`): ``document`` a string, ``model`` echoed."""
        meta = self._meta(resp, documents, "1")
        return InfinityResponse(
            results=[
                InfinityResult(relevance_score=min(1.0, max(0.0, r.score)), index=r.index,
                               document=r.text if return_documents else None, truncated=r.truncated)
                for r in resp.results
            ],
            model=model or self.model_name,
            usage=Usage(
                total_tokens=meta.tokens.input_tokens + meta.tokens.output_tokens,
                prompt_tokens=meta.tokens.input_tokens,
            ),
            meta=meta,
        )


async def _disconnected(request) -> None:
    """Return once the client has disconnected.

    The body has already been read, so the server's ``receive`` blocks until the
    connection closes. A server that answers anything else at once is asked again
    only every few seconds; one whose ``receive`` fails is never asked again.
    """
    while True:
        try:
            message = await request.receive()
        except Exception:  # noqa: BLE001 - cannot tell; the deadline still ends the wait
            await asyncio.Event().wait()
        if message.get("type") == "http.disconnect":
            return
        await asyncio.sleep(RECEIVE_RETRY_SECONDS)


def _shutting_down() -> ApiError:
    return ApiError(503, "shutting_down", "the server is shutting down; retry against a running server",
                    {"Retry-After": "5"})
