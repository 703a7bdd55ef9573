"""The public Python API: ``Reranker(model).rerank(query, documents)``."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, KeysView, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Callable

from .api_args import check_int
from .backends.base import Backend, ModelRuntime  # noqa: F401 - Backend kept importable from here
from .contract import Profile
from .contract.profile import check_fields
from .engine import FirstStage, Ranking, RankingState, WindowResult, rank_documents, validate_request
from .errors import UserInputError
from .run_options import PROFILE, RunOptions, check_values, knobs, options_doc
from .store import resolve

from .limits import MAX_DOCUMENTS

_OPTION_NAMES = frozenset(RunOptions.names())
_PROFILE_FIELDS = tuple(name for name, _d, k in knobs() if k.kind == PROFILE)


@dataclass(frozen=True)
class RerankResult:
    index: int  # position in the input list
    text: str
    rank: int  # 0 = most relevant
    score: float  # in [0, 1]; decreasing with rank, but for a first stage's probabilities inside the listwise part
    truncated: bool = False  # True when only the first part of the text was ranked


@dataclass
class RerankResponse:
    results: list[RerankResult]
    ranking: Ranking = field(repr=False)

    @property
    def windows(self) -> list[WindowResult]:
        """Per-window raw outputs, prompt/output token ids and parse status, for debugging."""
        return self.ranking.windows

    @property
    def statuses(self) -> list[str]:
        return self.ranking.statuses

    def __iter__(self):
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, i):
        return self.results[i]


def _type_name(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def check_call(query: Any, documents: Any, top_n: Any, top_name: str = "top_n") -> list[str]:
    """Check the arguments of :meth:`Reranker.rerank` before any work; return ``documents`` as a list.

    The messages use the Python argument names (``query``, ``documents``, ``top_name``).
    ``documents`` may be any iterable of ``str`` (a list, a tuple, a generator, which is read
    once); a ``str``, ``bytes`` or a mapping is refused, since iterating it would rank its
    characters or keys, and so is a set, whose order is arbitrary (a result's ``index`` could not
    point back at the caller's document). Raises :class:`UserInputError`.
    """
    if not isinstance(query, str) or not query.strip():
        shown = "an empty or blank str" if isinstance(query, str) else _type_name(query)
        raise UserInputError(f"query must be a non-empty str, got {shown}")
    if isinstance(documents, (str, bytes, bytearray, memoryview, Mapping)) or not isinstance(documents, Iterable):
        raise UserInputError(
            f"documents must be a list of str (one item per document), got {_type_name(documents)}"
        )
    if isinstance(documents, AbstractSet) and not isinstance(documents, KeysView):
        raise UserInputError(
            f"documents must be in an order (a list, a tuple or a generator of str), got {_type_name(documents)}: "
            "a set has none, so the results' index could not point back at your documents"
        )
    docs = []
    for i, d in enumerate(documents):
        if not isinstance(d, str):
            raise UserInputError(f"documents[{i}] must be a str, got {_type_name(d)}")
        docs.append(d)
        if len(docs) > MAX_DOCUMENTS:
            raise UserInputError(
                f"documents holds more than the limit of {MAX_DOCUMENTS}; "
                "rerank a shortlist (e.g. a retriever's top 100)"
            )
    if not docs:
        raise UserInputError("documents is empty; pass at least one str")
    check_int(top_name, top_n, 1, optional=True)
    return docs




def check_arguments(*, profile=None, backend=None, verbose=False, **options) -> None:
    """Check the keyword arguments of :class:`Reranker` (but the profile fields, which
    :meth:`Profile.with_` checks) for type and range before any work; messages name the argument.

    ``options`` are run options (:class:`RunOptions` fields), checked as their declaration says.

    Raises:
        UserInputError: the first argument of the wrong type or out of range.
    """
    if profile is not None and not isinstance(profile, Profile):
        raise UserInputError(f"profile must be None or a dear_local.Profile, got {_type_name(profile)}")
    check_values(**options)
    if backend is not None and not isinstance(backend, ModelRuntime):
        raise UserInputError(f"backend must be None or a dear_local Backend, got {_type_name(backend)}")
    if not isinstance(verbose, bool):
        raise UserInputError(f"verbose must be a bool, got {_type_name(verbose)}")


def rank_scores(n: int) -> list[float]:
    """Scores derived from rank alone: 1.0 for the best, falling linearly to 1/n."""
    return [(n - r) / n for r in range(n)]


def response_of(ranking: Ranking, documents: list[str], top_n: int | None = None) -> RerankResponse:
    """The results of ``ranking`` over ``documents``: best first, at most ``top_n``.

    Scores are the ranking's own when it has them (first-token probabilities, or a first stage's
    pointwise probabilities, which need not fall with rank inside the listwise part), else derived
    from rank; a ranking stopped early (``ranking.complete`` False) without a first stage is one of those.
    """
    if ranking.scores is not None:
        scores = [ranking.scores[i] for i in ranking.order]
    else:
        scores = rank_scores(len(documents))
    results = [
        RerankResult(index=idx, text=documents[idx], rank=r, score=float(scores[r]),
                     truncated=ranking.truncated[idx])
        for r, idx in enumerate(ranking.order)
    ]
    return RerankResponse(results=results[:top_n] if top_n else results, ranking=ranking)


def first_stage_of(scorer, query: str, documents: list[str]) -> FirstStage:
    """Score every document with a pointwise ranker (a :class:`~dear_local.backends.pointwise.PointwiseModel`)
    and order them by score (equal scores in input order); the scores are probabilities (:func:`probability`).

    A document joined with its title by an input format (``"Title: {title} Content: {text}"``) is read
    with the title in the pointwise template's own place (:func:`dear_local.contract.titles.split_title`).
    Scores of a pair can differ by about 1e-6 with the other documents in its llama.cpp call, so equal
    documents need not come back in input order."""
    from .contract.pointwise import probability
    from .contract.titles import split_title

    pairs = [scorer.pair(query, text, title) for title, text in map(split_title, documents)]
    logits = scorer.score_ids([ids for ids, _ in pairs])
    order = sorted(range(len(documents)), key=lambda i: (-float(logits[i]), i))
    return FirstStage(order=order, scores=[probability(float(x)) for x in logits], truncated=[cut for _, cut in pairs],
                      tokens=sum(len(ids) for ids, _ in pairs))


def _open_first_stage(name: str, run: RunOptions, verbose: bool):
    from .backends.pointwise import PointwiseModel
    from .settings import get_settings

    settings = get_settings()
    return PointwiseModel(
        resolve(name).path, batch=run.first_stage_batch, n_threads=run.n_threads,
        cpu_buffers=run.cpu_buffers if run.cpu_buffers is not None else settings.cpu_buffers,
        flash_attn=run.flash_attn if run.flash_attn is not None else settings.flash_attn, verbose=verbose,
    )


class Reranker:
    # The docstring is _RERANKER_DOC below, with one line per run option from RunOptions.

    def __init__(self, model: str | None, profile: Profile | None = None, *, backend: ModelRuntime | None = None,
                 verbose: bool = False, **options: Any) -> None:
        unknown = [name for name in options if name not in _OPTION_NAMES]
        if unknown:
            raise TypeError(f"Reranker() got an unexpected keyword argument {unknown[0]!r}")
        check_arguments(profile=profile, backend=backend, verbose=verbose, **options)
        profile_fields = {k: options[k] for k in _PROFILE_FIELDS if options.get(k) is not None}
        check_fields(**profile_fields)
        if options.get("servers"):
            options["servers"] = tuple(options["servers"])
        run = RunOptions(**options)
        if model is None and backend is None and run.first_stage is None:
            raise UserInputError("model is None: pass a listwise model, or a pointwise one as first_stage to rank with it alone")
        if model is not None and not isinstance(model, str):
            raise UserInputError(f"model must be a str (a .gguf path or NAME[:QUANT]) or None, got {_type_name(model)}")
        run.check_first_stage(model is not None or backend is not None)
        resolved = resolve(model) if backend is None and model is not None else None
        base = profile or (resolved.manifest.profile if resolved and resolved.manifest else Profile())
        self.profile = base.with_(**{k: options.get(k) for k in _PROFILE_FIELDS})
        self.model = model
        self.options = run
        self.first_stage = None
        if run.first_stage is not None:  # the pointwise ranker first: its mistakes cost no listwise load
            self.first_stage = _open_first_stage(run.first_stage, run, verbose)
        try:
            if backend is None and resolved is not None:
                from .backends import factory

                backend = factory.open_backend(resolved.path, run, profile=self.profile, verbose=verbose)
            elif backend is not None:
                run.check_lora()  # refused with a backend too
        except BaseException:
            if self.first_stage is not None:
                self.first_stage.close()
            raise
        self.backend = backend

    @classmethod
    def from_options(cls, model: str, options: RunOptions) -> "Reranker":
        """A reranker for ``model`` with the profile overrides and load settings of ``options``."""
        return cls(model, **options.as_kwargs())

    def rerank(
        self,
        query: str,
        documents: list[str],
        top_n: int | None = None,
        on_window: Callable[[WindowResult], None] | None = None,
        state: RankingState | None = None,
    ) -> RerankResponse:
        """Rerank ``documents`` for ``query``; return the best ``top_n`` (all by default).

        Lists longer than the profile's window go through sliding windows, back to
        front. ``results`` are best first, each with its input ``index``, ``rank``
        (0 = best), ``score`` in (0, 1] and ``truncated`` (cut to the template's
        passage cap); ``windows`` hold every window's raw answer, token ids and parse
        status. ``on_window`` is called after each window (for progress bars); an exception it
        raises stops the ranking. ``state`` (a :class:`~dear_local.engine.RankingState`) records the
        finished windows, so another thread can take the order so far with ``state.snapshot()``.

        ``query`` is a non-empty ``str``; ``documents`` any iterable of ``str`` (a generator is
        read once), but not a ``str``, ``bytes`` or dict; ``top_n`` ``None`` or an ``int`` >= 1.
        All of this is checked before any work.

        Raises:
            UserInputError: a query that is not a non-empty str, documents that are not an
                iterable of str (named by index), none or more than 1,000 documents, a
                ``top_n`` that is not an int of at least 1, or text that is not valid
                Unicode (a lone surrogate), naming the query or the document's index.
            ContextOverflowError: a window whose prompt cannot fit the context.
        """
        documents = check_call(query, documents, top_n)
        if on_window is not None and not callable(on_window):
            raise UserInputError(f"on_window must be a callable or None, got {_type_name(on_window)}")
        if state is not None and not isinstance(state, RankingState):
            raise UserInputError(f"state must be a dear_local.engine.RankingState or None, got {_type_name(state)}")
        if state is not None and state.n != len(documents):
            raise UserInputError(f"state is for {state.n} documents, but {len(documents)} were passed")
        first = None
        if self.first_stage is not None:
            validate_request(query, documents)  # before the first stage reads them
            first = first_stage_of(self.first_stage, query, documents)
        if self.backend is not None:
            self.backend.start_query()  # on servers: each query starts on the least-used one, its windows stay there
        depth = self.options.listwise_depth if first is not None else None
        ranking = rank_documents(self.backend, self.profile, query, documents, on_window, state,
                                 first_stage=first, depth=depth)
        return response_of(ranking, documents, top_n)

    def rank(
        self, query: str, documents: list[str], top_k: int | None = None, return_documents: bool = True
    ) -> list[dict]:
        """sentence-transformers' ``CrossEncoder.rank`` shape: ``[{corpus_id, score, text}]``, best first.

        ``corpus_id`` is the index into ``documents``; ``score`` is in (0, 1]: decreasing with rank
        (the first-token probability under ``first-token`` decoding), except with a first stage,
        where it is the pointwise probability and need not fall with rank inside the listwise
        depth; at most ``top_k`` items. Raises what :meth:`rerank` raises.
        """
        documents = check_call(query, documents, top_k, "top_k")
        out = []
        for r in self.rerank(query, documents, top_n=top_k).results:
            item = {"corpus_id": r.index, "score": r.score}
            if return_documents:
                item["text"] = r.text
            out.append(item)
        return out

    def close(self) -> None:
        if self.first_stage is not None:
            self.first_stage.close()
        if self.backend is not None:
            self.backend.close()

    def __enter__(self) -> "Reranker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_RERANKER_DOC = """A listwise reranker backed by a GGUF model through llama.cpp, or by inference servers,
optionally behind a pointwise first stage (DeAR-P, ``first_stage``).

``model`` is a ``.gguf`` path or ``NAME[:QUANT]`` from the model store (None with ``first_stage``
alone: a pointwise ranking). The profile
defaults to the model manifest's, or to ``Profile()`` (the card prompt, greedy) for a
bare file. The run options, as keyword arguments (:meth:`from_options` takes them as
one :class:`RunOptions`):

{options}

``backend`` replaces the model :func:`dear_local.backends.factory.open_backend` would open
with any runtime (a :class:`Backend`); ``verbose`` shows llama.cpp's own log.

Raises:
    ModelNotFoundError, UnknownModelError: a missing file or an unknown name/quant.
    InvalidModelFileError: a file llama.cpp cannot load, or an adapter that does not fit it.
    ServerError: a server that does not answer, or serves another tokenizer.
    UnknownTemplateError, UnknownProfileError: a bad profile override.
    UserInputError: an argument of the wrong type or out of range, ``n_ctx`` or ``lora`` with ``servers``.
"""


def _derive_signature_and_doc() -> None:
    """``Reranker``'s docstring and signature, with every run option from :class:`RunOptions`."""
    Reranker.__doc__ = _RERANKER_DOC.format(options=options_doc(indent=""))
    P = inspect.Parameter
    params = [P("self", P.POSITIONAL_OR_KEYWORD), P("model", P.POSITIONAL_OR_KEYWORD, annotation=str),
              P("profile", P.POSITIONAL_OR_KEYWORD, default=None, annotation="Profile | None")]
    params += [P(name, P.KEYWORD_ONLY, default=default) for name, default, _k in knobs()]
    params += [P("backend", P.KEYWORD_ONLY, default=None, annotation="ModelRuntime | None"),
               P("verbose", P.KEYWORD_ONLY, default=False, annotation=bool)]
    Reranker.__init__.__signature__ = inspect.Signature(params, return_annotation=None)


_derive_signature_and_doc()
