"""Ranking quality and agreement metrics for the agreement check.

- Quality: nDCG@1/5/10 of a run against graded judgments, computed by pytrec_eval (trec_eval's
  own code) rather than by hand. A run is ``{qid: [docid, ...]}``, best first; each document is
  given the score ``n - rank`` so trec_eval's sort by score keeps the order exactly.
- Agreement between two permutations of the same candidates: exact match, Kendall tau
  (scipy), top-1 agreement and top-k overlap.
- First-token agreement between two log-probability vectors over the candidate ids: the KL
  divergence KL(reference || other) and whether both put the same id first.
- Aggregates over many queries or windows for the report: exact-match %, mean and min tau,
  top-1 %, mean top-5 overlap, mean and max KL, first-token top-1 %.
- Score agreement between two pointwise rankers' scores for the same candidates: Kendall tau
  and Spearman's rho of the scores (scipy), and the absolute score error.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Hashable, Mapping, Sequence

import numpy as np

from dear_local.errors import UserInputError, missing_extra
from dear_local.evaluation import trec_eval

__all__ = [
    "NDCG_CUTOFFS",
    "AgreementSummary",
    "FirstTokenSummary",
    "NdcgResult",
    "exact_match",
    "first_token_kl",
    "first_token_top1",
    "kendall_tau",
    "ndcg",
    "score_correlations",
    "ndcg_delta",
    "summarize_agreement",
    "summarize_first_token",
    "top1_agreement",
    "topk_overlap",
]

NDCG_CUTOFFS = (1, 5, 10)


# ---------------------------------------------------------------------------------------------
# Quality: nDCG with pytrec_eval


@dataclass(frozen=True)
class NdcgResult:
    """nDCG per query and its mean over the run's queries, keyed ``"ndcg@10"`` and so on."""

    per_query: dict[str, dict[str, float]]
    mean: dict[str, float]

    def as_dict(self) -> dict:
        return asdict(self)


def _run_scores(run: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    scored = {}
    for qid, docids in run.items():
        docids = [str(d) for d in docids]
        if len(set(docids)) != len(docids):
            raise UserInputError(f"the ranking for query {qid} lists a document more than once")
        n = len(docids)
        scored[str(qid)] = {d: float(n - rank) for rank, d in enumerate(docids)}
    return scored


def ndcg(
    run: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, int]],
    cutoffs: Sequence[int] = NDCG_CUTOFFS,
) -> NdcgResult:
    """nDCG@k of ``run`` (``{qid: [docids best first]}``) against ``qrels`` (``{qid: {docid: grade}}``).

    trec_eval conventions: gain is the grade itself, unjudged documents count as 0, and the
    ideal ranking is built from every judgment of the query, retrieved or not. The mean is over
    the run's queries; every one of them must have judgments.
    """
    if not run:
        raise UserInputError("cannot compute nDCG of an empty run")
    cutoffs = sorted({int(k) for k in cutoffs})
    if not cutoffs or cutoffs[0] < 1:
        raise UserInputError(f"nDCG cutoffs must be positive integers, not {cutoffs}")
    scores = _run_scores(run)
    judged = {str(q): {str(d): int(g) for d, g in docs.items()} for q, docs in qrels.items()}
    unjudged = sorted(q for q in scores if not judged.get(q))
    if unjudged:
        raise UserInputError(
            f"queries {unjudged} have no judgments in the qrels; evaluate a run only on the "
            "slice its qrels come from"
        )
    raw = trec_eval({q: judged[q] for q in scores}, scores, {"ndcg_cut." + ",".join(map(str, cutoffs))})
    per_query = {
        q: {f"ndcg@{k}": float(raw[q][f"ndcg_cut_{k}"]) for k in cutoffs} for q in scores
    }
    mean = {
        f"ndcg@{k}": float(np.mean([per_query[q][f"ndcg@{k}"] for q in per_query])) for k in cutoffs
    }
    return NdcgResult(per_query, mean)


def ndcg_delta(reference: NdcgResult, other: NdcgResult, key: str = "ndcg@10") -> float:
    """``other`` minus ``reference`` in mean ``key`` (negative means the other ranks worse)."""
    if set(reference.per_query) != set(other.per_query):
        raise UserInputError("the two nDCG results cover different queries; compare like with like")
    return other.mean[key] - reference.mean[key]


# ---------------------------------------------------------------------------------------------
# Agreement between two permutations


def _positions(a: Sequence, b: Sequence) -> tuple[list[int], list[int]]:
    a, b = list(a), list(b)
    if len(set(a)) != len(a) or len(set(b)) != len(b):
        raise UserInputError("a ranking lists an item more than once; pass permutations")
    if set(a) != set(b):
        raise UserInputError(
            "the two rankings hold different items; agreement is defined only between "
            "permutations of the same candidates"
        )
    pos_b = {item: i for i, item in enumerate(b)}
    return list(range(len(a))), [pos_b[item] for item in a]


def exact_match(a: Sequence, b: Sequence) -> bool:
    """Whether two permutations of the same candidates are identical."""
    _positions(a, b)
    return list(a) == list(b)


def kendall_tau(a: Sequence, b: Sequence) -> float:
    """Kendall's tau between two permutations of the same candidates (1 same, -1 reversed).

    Lists of fewer than two items are trivially in agreement and give 1.0.
    """
    pa, pb = _positions(a, b)
    if len(pa) < 2:
        return 1.0
    try:
        from scipy.stats import kendalltau
    except ImportError:
        raise missing_extra("scipy", "convert") from None
    return float(kendalltau(pa, pb)[0])


def top1_agreement(a: Sequence, b: Sequence) -> bool:
    """Whether two permutations of the same candidates put the same item first."""
    _positions(a, b)
    if not a:
        raise UserInputError("empty rankings have no first item")
    return a[0] == b[0]


def topk_overlap(a: Sequence, b: Sequence, k: int = 5) -> float:
    """``|top-k(a) ∩ top-k(b)| / k``, with k capped at the number of candidates."""
    _positions(a, b)
    if k < 1:
        raise UserInputError(f"k must be a positive integer, not {k}")
    k = min(k, len(a))
    if k == 0:
        raise UserInputError("empty rankings have no top-k")
    return len(set(list(a)[:k]) & set(list(b)[:k])) / k


def score_correlations(reference: Sequence[float], other: Sequence[float]) -> tuple[float, float]:
    """Kendall's tau-b and Spearman's rho between two score vectors for the same candidates, in order.

    Both are in [-1, 1]; fewer than two candidates, or a constant vector on both sides, give 1.0
    (nothing to disagree on); a constant vector on one side only gives 0.0.

    Raises:
        UserInputError: vectors of different lengths, or a score that is not finite.
    """
    a, b = np.asarray(reference, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise UserInputError(f"score vectors of different shapes: {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise UserInputError("a score is not finite (nan or inf); the model's output is broken")
    if len(a) < 2:
        return 1.0, 1.0
    flat_a, flat_b = bool(np.all(a == a[0])), bool(np.all(b == b[0]))
    if flat_a or flat_b:
        return (1.0, 1.0) if flat_a and flat_b else (0.0, 0.0)
    try:
        from scipy.stats import kendalltau, spearmanr
    except ImportError:
        raise missing_extra("scipy", "convert") from None
    return float(kendalltau(a, b)[0]), float(spearmanr(a, b)[0])


# ---------------------------------------------------------------------------------------------
# First-token agreement

# log-probabilities are floored here before use, so a zero probability in the other model
# gives a large but finite divergence instead of inf or nan.
_LOG_FLOOR = math.log(np.finfo(np.float64).tiny)


def _log_softmax(logprobs: Sequence[float], what: str) -> np.ndarray:
    x = np.asarray(logprobs, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise UserInputError(f"{what} must be a non-empty vector of log-probabilities")
    if np.isnan(x).any() or np.isposinf(x).any():
        raise UserInputError(f"{what} holds nan or +inf; pass finite log-probabilities")
    if np.isneginf(x).all():
        raise UserInputError(f"{what} gives every candidate zero probability")
    x = np.maximum(x, _LOG_FLOOR)
    top = x.max()
    return x - (top + math.log(np.exp(x - top).sum()))


def first_token_kl(reference: Sequence[float], other: Sequence[float], *, renormalize: bool = True) -> float:
    """KL(reference || other) between two first-token log-probability vectors, in nats.

    The vectors give the log-probability of each candidate id as the first output token, in
    the same candidate order. With ``renormalize`` (the default) each is turned into a
    distribution over the candidates first (a log-softmax), since the ids are only a slice of
    the vocabulary. The result is finite and never negative.
    """
    if len(reference) != len(other):
        raise UserInputError(
            f"the log-probability vectors differ in length ({len(reference)} vs {len(other)}); "
            "they must cover the same candidates"
        )
    if renormalize:
        lp, lq = _log_softmax(reference, "reference"), _log_softmax(other, "other")
    else:
        lp = np.maximum(np.asarray(reference, dtype=np.float64), _LOG_FLOOR)
        lq = np.maximum(np.asarray(other, dtype=np.float64), _LOG_FLOOR)
    p = np.exp(lp)
    return float(max(0.0, np.sum(p * (lp - lq))))


def first_token_top1(reference: Sequence[float], other: Sequence[float]) -> bool:
    """Whether both log-probability vectors rank the same candidate id highest."""
    if len(reference) != len(other) or len(reference) == 0:
        raise UserInputError("the log-probability vectors must be non-empty and the same length")
    return int(np.argmax(reference)) == int(np.argmax(other))


# ---------------------------------------------------------------------------------------------
# Aggregates


def _paired(reference: Mapping, other: Mapping, what: str) -> list[Hashable]:
    if not reference:
        raise UserInputError(f"no {what} to compare")
    if set(reference) != set(other):
        missing = sorted(map(str, set(reference) ^ set(other)))[:5]
        raise UserInputError(f"the two sets of {what} cover different keys (e.g. {missing})")
    return list(reference)


@dataclass(frozen=True)
class AgreementSummary:
    """How closely one set of rankings follows a reference, over ``n`` queries."""

    n: int
    exact_match_pct: float
    mean_tau: float
    min_tau: float
    top1_pct: float
    top5_overlap: float
    per_query_tau: dict[str, float]

    def as_dict(self) -> dict:
        return asdict(self)


def summarize_agreement(
    reference: Mapping[Hashable, Sequence], other: Mapping[Hashable, Sequence], k: int = 5
) -> AgreementSummary:
    """Agreement of ``other`` with ``reference``: both ``{key: permutation}`` over the same keys."""
    keys = _paired(reference, other, "rankings")
    taus = {str(key): kendall_tau(reference[key], other[key]) for key in keys}
    exact = [exact_match(reference[key], other[key]) for key in keys]
    top1 = [top1_agreement(reference[key], other[key]) for key in keys]
    overlap = [topk_overlap(reference[key], other[key], k) for key in keys]
    return AgreementSummary(
        n=len(keys),
        exact_match_pct=100.0 * float(np.mean(exact)),
        mean_tau=float(np.mean(list(taus.values()))),
        min_tau=float(min(taus.values())),
        top1_pct=100.0 * float(np.mean(top1)),
        top5_overlap=float(np.mean(overlap)),
        per_query_tau=taus,
    )


@dataclass(frozen=True)
class FirstTokenSummary:
    """First-token agreement over ``n`` windows: mean and max KL, and same-top-id %."""

    n: int
    mean_kl: float
    max_kl: float
    top1_pct: float

    def as_dict(self) -> dict:
        return asdict(self)


def summarize_first_token(
    reference: Mapping[Hashable, Sequence[float]],
    other: Mapping[Hashable, Sequence[float]],
    *,
    renormalize: bool = True,
) -> FirstTokenSummary:
    """First-token agreement of ``other`` with ``reference``, both ``{key: log-probs}``.

    A key is whatever identifies one window, for example ``(qid, window_index)``.
    """
    keys = _paired(reference, other, "first-token vectors")
    kls = [first_token_kl(reference[key], other[key], renormalize=renormalize) for key in keys]
    top1 = [first_token_top1(reference[key], other[key]) for key in keys]
    return FirstTokenSummary(
        n=len(keys),
        mean_kl=float(np.mean(kls)),
        max_kl=float(max(kls)),
        top1_pct=100.0 * float(np.mean(top1)),
    )
