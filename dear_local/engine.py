"""The ranking engine: prompt -> decoding -> parse, per window and over a list.

Every backend goes through these functions, so the transformers reference and
the llama.cpp runtime share one prompt, one decoding loop and one parser.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from .backends.base import Backend, capabilities_of
from .contract import Profile, parse_ranking, window_spans
from .decoding import decode
from .errors import ContextOverflowError, UserInputError
from .prompt import Passage, check_query, cut_passage, prompt_for
from .textcheck import check_text


@dataclass
class WindowResult:
    """One window's outcome: positions ``start:end`` of the list, the order the model gave, and the raw answer."""

    start: int
    end: int
    order: list[int]  # window positions, best first
    status: str
    raw_text: str
    prompt_ids: list[int]
    output_ids: list[int]
    model_calls: int
    prompt_seconds: float
    decode_seconds: float
    stop_reason: str
    scores: list[float] | None = None  # per window position, when the decoding mode gives them
    extra: dict = field(default_factory=dict)
    # How many ids of ``order`` the model's answer named (the parser appended the rest);
    # None for a window of one passage, which needs no answer.
    model_ids: int | None = None

    def record(self, *, tokens: bool = False) -> dict:
        """The window as JSON, one shape for the CLI's ``--format json`` and the reference file.

        Always: ``start``, ``end``, ``status``, ``raw_text``, ``stop_reason``, ``model_calls``.
        With ``tokens`` (the reference file): ``prompt_ids``, ``output_ids`` and the prompt and
        decode times in seconds.
        """
        rec = {"start": self.start, "end": self.end, "status": self.status, "raw_text": self.raw_text,
               "stop_reason": self.stop_reason, "model_calls": self.model_calls}
        if tokens:
            rec.update(prompt_ids=self.prompt_ids, output_ids=self.output_ids,
                       prompt_seconds=round(self.prompt_seconds, 4), decode_seconds=round(self.decode_seconds, 4))
        return rec


@dataclass
class Ranking:
    order: list[int]  # indices into the input documents, best first
    windows: list[WindowResult]
    scores: list[float] | None = None  # per input index, when available from a single window or a first stage
    truncated: list[bool] = field(default_factory=list)  # per input index: was the document cut?
    planned: int | None = None  # windows the list needed; more than len(windows) when stopped early
    score_kind: str | None = None  # what ``scores`` are: "first-token-probability" or "pointwise-probability"
    first_stage_tokens: int = 0  # token ids a first stage read, over every pair

    @property
    def statuses(self) -> list[str]:
        return [w.status for w in self.windows]

    @property
    def complete(self) -> bool:
        """False for a ranking stopped before its last window (see :class:`RankingState`)."""
        return self.planned is None or len(self.windows) >= self.planned


@dataclass(frozen=True)
class FirstStage:
    """A pointwise ranker's verdict on a list: the order it gives (best first, input indices), and per
    input index its probability of relevance and whether the document was cut to fit the ranker;
    ``tokens`` is how many token ids the ranker read over every pair."""

    KIND = "pointwise-probability"
    order: list[int]
    scores: list[float]
    truncated: list[bool]
    tokens: int = 0

    def ranking(self, order: list[int], windows: list[WindowResult], truncated: list[bool], planned: int) -> Ranking:
        """The :class:`Ranking` whose windows reordered this first stage's top: its scores and tokens."""
        return Ranking(order=order, windows=windows, scores=list(self.scores), truncated=truncated,
                       planned=planned, score_kind=self.KIND, first_stage_tokens=self.tokens)


def apply_window(order: list[int], window: WindowResult) -> None:
    """Reorder ``order[window.start:window.end]`` in place as ``window`` ranked it."""
    current = order[window.start:window.end]
    order[window.start:window.end] = [current[j] for j in window.order]


class RankingState:
    """A ranking in progress, which another thread can read: the windows :func:`rank_documents` has finished.

    Pass one to :func:`rank_documents` (or ``Reranker.rerank``); :meth:`snapshot` is then the best order
    available at any moment: the finished windows applied, every other document in input order (in a
    first stage's order, with its scores, once it has ranked the list). The HTTP
    server answers with it when a request's deadline comes before the ranking ends.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self._lock = threading.Lock()
        self._truncated = [False] * n
        self._windows: list[WindowResult] = []
        self._planned: int | None = None
        self._first_stage: FirstStage | None = None
        self.started_at: float | None = None  # time.monotonic() when the windows began

    def started(self, truncated: list[bool], planned: int, first_stage: FirstStage | None = None) -> None:
        """The ranking began: ``first_stage``, when given, is where the windows start from, and its
        scores hold whatever the windows do (default: the input order, rank-derived scores)."""
        with self._lock:
            self._truncated, self._planned, self._first_stage = list(truncated), planned, first_stage
            self.started_at = time.monotonic()

    def finished(self, window: WindowResult) -> None:
        with self._lock:
            self._windows.append(window)

    @property
    def windows_left(self) -> int | None:
        """Windows not finished yet; None before the ranking started."""
        with self._lock:
            return None if self._planned is None else self._planned - len(self._windows)

    def snapshot(self) -> Ranking:
        """The order so far and ``planned`` set; scores only a first stage's (others are rank-derived).

        Before the ranking started, the input order with no windows and ``planned`` 1 (not complete).
        """
        with self._lock:
            windows, truncated, planned = list(self._windows), list(self._truncated), self._planned
            first = self._first_stage
        order = list(first.order) if first is not None else list(range(self.n))
        for window in windows:
            apply_window(order, window)
        planned = 1 if planned is None else max(planned, len(windows))  # 0: a first stage alone, complete
        if first is not None:
            return first.ranking(order, windows, truncated, planned)
        return Ranking(order=order, windows=windows, truncated=truncated, planned=planned)


def prompt_ids(backend: Backend, profile: Profile, query: str, passages: list[str]) -> list[int]:
    """Token ids of the prompt for one window, exactly as every backend feeds them.

    Passages are cut to the template's limits; only the template's own markers
    become special tokens (see ``dear_local.prompt``).
    """
    tmpl = profile.tmpl
    return prompt_for(backend, tmpl, query, [cut_passage(backend, tmpl, p) for p in passages])


def _check_fits(backend: Backend, n_prompt: int, budget: int, n_passages: int) -> None:
    if n_prompt + budget > backend.n_ctx:
        what = "this document" if n_passages == 1 else f"this window of {n_passages} passages"
        raise ContextOverflowError(
            f"the prompt for {what} needs {n_prompt} tokens plus {budget} for the answer, "
            f"but the context holds {backend.n_ctx}; use a shorter query, a smaller --window or "
            + capabilities_of(backend).context_advice  # a server's context is set where it runs
        )


def rank_window(backend: Backend, profile: Profile, query: str, passages: list[str]) -> WindowResult:
    """Rank one window of passages (at most ``profile.window`` of them)."""
    tmpl = profile.tmpl
    return _rank_cut(backend, profile, query, [cut_passage(backend, tmpl, p) for p in passages])


def _rank_cut(backend: Backend, profile: Profile, query: str, passages: list[Passage]) -> WindowResult:
    n = len(passages)
    tmpl = profile.tmpl
    ids = prompt_for(backend, tmpl, query, passages)
    budget = profile.max_new_tokens(n)
    _check_fits(backend, len(ids), budget, n)
    if n == 1:
        return WindowResult(0, 1, [0], "ok", "", ids, [], 0, 0.0, 0.0, "single")
    gen, scores = decode(backend, profile, ids, n)
    parsed = parse_ranking(gen.text, n, tmpl.id_base)
    return WindowResult(
        start=0,
        end=n,
        order=parsed.order,
        status=parsed.status,
        raw_text=gen.text,
        prompt_ids=ids,
        output_ids=gen.token_ids,
        model_calls=gen.model_calls,
        prompt_seconds=gen.prompt_seconds,
        decode_seconds=gen.decode_seconds,
        stop_reason=gen.stop_reason,
        scores=scores,
        extra=gen.extra,
        model_ids=parsed.model_ids,
    )


def validate_request(query: str, documents: list[str]) -> None:
    """Raise :class:`UserInputError` for an empty query, no documents, or anything that is not valid text."""
    if not isinstance(query, str) or not query.strip():
        raise UserInputError("the query is empty; pass a non-empty --query")
    check_text(query, "the query")
    if not documents:
        raise UserInputError("there are no documents to rerank; pass --docs FILE, --jsonl FILE or pipe text on stdin")
    for i, d in enumerate(documents):
        if not isinstance(d, str):
            raise UserInputError(f"document {i} is a {type(d).__name__}, not text")
        check_text(d, f"document {i}")


def rank_documents(
    backend: Backend | None,
    profile: Profile,
    query: str,
    documents: list[str],
    on_window: Callable[[WindowResult], None] | None = None,
    state: RankingState | None = None,
    *,
    first_stage: "FirstStage | None" = None,
    depth: int | None = None,
) -> Ranking:
    """Rerank a whole list through sliding windows, back to front.

    ``on_window`` is called after each window; an exception it raises stops the ranking there.
    ``state``, when given, records each finished window, so another thread can read the order so far.

    With ``first_stage`` (a pointwise ranker's order and scores, :class:`FirstStage`), the windows
    reorder only its first ``depth`` documents (all by default; none without a ``backend``), the
    rest keep the first stage's order, and the scores are the first stage's.
    """
    validate_request(query, documents)
    n = len(documents)
    order = list(first_stage.order) if first_stage is not None else list(range(n))
    n_ranked = 0 if backend is None else n if depth is None else min(depth, n)
    if n_ranked:
        check_query(backend, query)  # before the documents are cut: a query that cannot fit costs little
    tmpl = profile.tmpl
    passages = {i: cut_passage(backend, tmpl, documents[i]) for i in order[:n_ranked]}
    truncated = list(first_stage.truncated) if first_stage is not None else [False] * n
    for i, p in passages.items():
        truncated[i] = truncated[i] or p.truncated
    spans = window_spans(n_ranked, profile.window, profile.stride) if n_ranked else []
    if state is not None:
        state.started(truncated, len(spans), first_stage)
    results: list[WindowResult] = []
    for start, end in spans:
        res = _rank_cut(backend, profile, query, [passages[i] for i in order[start:end]])
        res.start, res.end = start, end
        apply_window(order, res)
        results.append(res)
        if state is not None:
            state.finished(res)
        if on_window is not None:
            on_window(res)
    if first_stage is not None:
        return first_stage.ranking(order, results, truncated, len(spans))
    scores = None
    if len(results) == 1 and results[0].scores is not None:
        window_scores = results[0].scores
        scores = [0.0] * len(documents)
        for pos, idx in enumerate(order):
            scores[idx] = window_scores[results[0].order[pos]] if len(documents) > 1 else 1.0
    return Ranking(order=order, windows=results, scores=scores, truncated=truncated,
                   planned=len(spans), score_kind="first-token-probability" if scores is not None else None)


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t
