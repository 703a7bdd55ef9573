"""Metrics: hand-computed small cases, and the published DL19 BM25 figure through real data."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dear_local_convert.agreement.metrics import (
    exact_match,
    first_token_kl,
    first_token_top1,
    kendall_tau,
    ndcg,
    ndcg_delta,
    summarize_agreement,
    summarize_first_token,
    top1_agreement,
    topk_overlap,
)
from dear_local_convert.slices import load_slice
from dear_local.errors import UserInputError


def dcg(gains):
    """trec_eval's DCG: gain is the grade, discount log2(rank + 1) with 1-based ranks."""
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


# ---------------------------------------------------------------------------------------------
# nDCG


def test_ndcg_matches_the_formula_on_a_four_document_case():
    # q1 judges a relevant document "e" that the run never retrieves: the ideal ranking still
    # counts it, as trec_eval does.
    qrels = {"q1": {"a": 3, "b": 2, "c": 0, "d": 1, "e": 2}, "q2": {"x": 1, "y": 0}}
    run = {"q1": ["c", "a", "d", "b"], "q2": ["x", "y"]}

    got = ndcg(run, qrels)

    gains = [0, 3, 1, 2]  # c, a, d, b
    ideal = [3, 2, 2, 1, 0]  # a, b/e, e/b, d, c
    want = {
        "ndcg@1": dcg(gains[:1]) / dcg(ideal[:1]),
        "ndcg@5": dcg(gains[:5]) / dcg(ideal[:5]),
        "ndcg@10": dcg(gains[:10]) / dcg(ideal[:10]),
    }
    assert want["ndcg@1"] == 0.0
    for key, value in want.items():
        assert got.per_query["q1"][key] == pytest.approx(value, abs=1e-12)
        assert got.per_query["q2"][key] == pytest.approx(1.0)
        assert got.mean[key] == pytest.approx((value + 1.0) / 2, abs=1e-12)


def test_ndcg_keeps_the_run_order_rather_than_docid_order():
    # trec_eval sorts by score and breaks ties by docid; rank-derived scores leave no ties.
    qrels = {"q": {"a": 0, "b": 1}}
    assert ndcg({"q": ["b", "a"]}, qrels).mean["ndcg@1"] == 1.0
    assert ndcg({"q": ["a", "b"]}, qrels).mean["ndcg@1"] == 0.0


def test_ndcg_counts_unjudged_documents_as_zero_gain():
    qrels = {"q": {"a": 2}}
    got = ndcg({"q": ["zzz", "a"]}, qrels, cutoffs=(1, 2))
    assert got.per_query["q"]["ndcg@1"] == 0.0
    assert got.per_query["q"]["ndcg@2"] == pytest.approx(dcg([0, 2]) / dcg([2]))


def test_ndcg_refuses_queries_without_judgments_and_repeated_documents():
    with pytest.raises(UserInputError, match="no judgments"):
        ndcg({"q9": ["a"]}, {"q1": {"a": 1}})
    with pytest.raises(UserInputError, match="more than once"):
        ndcg({"q1": ["a", "a"]}, {"q1": {"a": 1}})
    with pytest.raises(UserInputError):
        ndcg({}, {"q1": {"a": 1}})


def test_ndcg_delta_is_other_minus_reference():
    qrels = {"q": {"a": 0, "b": 1}}
    ref = ndcg({"q": ["b", "a"]}, qrels)
    other = ndcg({"q": ["a", "b"]}, qrels)
    assert ndcg_delta(ref, other) == pytest.approx(other.mean["ndcg@10"] - ref.mean["ndcg@10"])
    assert ndcg_delta(ref, other) < 0
    assert ndcg_delta(ref, ref) == 0.0


@pytest.mark.parametrize("name", ["dl19-top100", "dl19-top20"])
def test_dl19_bm25_order_scores_the_published_ndcg10(name):
    # SOURCES.md and the literature: BM25 on DL19 passage scores nDCG@10 = 0.5058.
    sl = load_slice(name)
    result = ndcg(sl.initial_run(), sl.qrels)
    assert len(result.per_query) == 43
    assert round(result.mean["ndcg@10"], 4) == 0.5058


# ---------------------------------------------------------------------------------------------
# Agreement between permutations


def test_kendall_tau_matches_pair_counting():
    a = ["a", "b", "c", "d"]
    b = ["b", "a", "c", "d"]  # one of the six pairs is swapped
    concordant, discordant = 5, 1
    assert kendall_tau(a, b) == pytest.approx((concordant - discordant) / 6)
    assert kendall_tau(a, a) == pytest.approx(1.0)
    assert kendall_tau(a, a[::-1]) == pytest.approx(-1.0)
    assert kendall_tau(["x"], ["x"]) == 1.0


def test_exact_top1_and_top5_on_a_small_case():
    a = ["a", "b", "c", "d", "e", "f"]
    b = ["b", "a", "c", "d", "f", "e"]
    assert exact_match(a, a) and not exact_match(a, b)
    assert top1_agreement(a, a) and not top1_agreement(a, b)
    assert topk_overlap(a, b) == pytest.approx(4 / 5)  # {a,b,c,d,e} vs {a,b,c,d,f}
    assert topk_overlap(a, b, k=2) == 1.0
    assert topk_overlap(a[:3], a[:3][::-1]) == 1.0  # k is capped at the list length


def test_agreement_refuses_rankings_of_different_candidates():
    for fn in (exact_match, kendall_tau, top1_agreement, topk_overlap):
        with pytest.raises(UserInputError, match="different items"):
            fn(["a", "b"], ["a", "c"])
    with pytest.raises(UserInputError, match="more than once"):
        kendall_tau(["a", "a"], ["a", "a"])


def test_summarize_agreement_aggregates_per_query_figures():
    ref = {"q1": [0, 1, 2, 3, 4, 5], "q2": [0, 1, 2, 3, 4, 5], "q3": [0, 1, 2, 3, 4, 5]}
    other = {"q1": [0, 1, 2, 3, 4, 5], "q2": [1, 0, 2, 3, 4, 5], "q3": [5, 4, 3, 2, 1, 0]}
    s = summarize_agreement(ref, other)
    tau_q2 = (14 - 1) / 15
    assert s.n == 3
    assert s.exact_match_pct == pytest.approx(100 / 3)
    assert s.top1_pct == pytest.approx(100 / 3)
    assert s.mean_tau == pytest.approx((1 + tau_q2 - 1) / 3)
    assert s.min_tau == pytest.approx(-1.0)
    assert s.top5_overlap == pytest.approx((1 + 1 + 4 / 5) / 3)  # q3: {5,4,3,2,1} vs {0..4}
    assert s.per_query_tau["q2"] == pytest.approx(tau_q2)
    assert s.as_dict()["n"] == 3
    with pytest.raises(UserInputError, match="different keys"):
        summarize_agreement(ref, {"q1": other["q1"]})


@given(st.permutations(list(range(8))))
def test_tau_is_one_only_for_identical_permutations(perm):
    base = list(range(8))
    tau = kendall_tau(base, perm)
    assert -1.0 - 1e-12 <= tau <= 1.0 + 1e-12
    assert (tau == pytest.approx(1.0)) == (perm == base) == exact_match(base, perm)


# ---------------------------------------------------------------------------------------------
# First-token agreement


def test_first_token_kl_matches_the_formula():
    p = [0.5, 0.25, 0.25]
    q = [0.25, 0.5, 0.25]
    want = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    assert want == pytest.approx(0.25 * math.log(2))
    got = first_token_kl([math.log(x) for x in p], [math.log(x) for x in q])
    assert got == pytest.approx(want, abs=1e-12)
    # KL is not symmetric in general, but this pair happens to be symmetric; check another.
    r = [0.7, 0.2, 0.1]
    back = sum(ri * math.log(ri / pi) for ri, pi in zip(r, p))
    assert first_token_kl([math.log(x) for x in r], [math.log(x) for x in p]) == pytest.approx(back)


def test_first_token_kl_renormalizes_over_the_candidates():
    # Log-probs of a vocabulary slice do not sum to one; shifting by a constant changes nothing.
    p = [math.log(x) for x in (0.5, 0.25, 0.25)]
    q = [math.log(x) for x in (0.25, 0.5, 0.25)]
    assert first_token_kl([x - 3.0 for x in p], [x - 7.5 for x in q]) == pytest.approx(
        first_token_kl(p, q)
    )
    assert first_token_kl(p, p) == 0.0


def test_first_token_kl_is_finite_with_zero_probabilities():
    ref = [0.0, -math.inf, -1.0]  # a zero in the reference contributes nothing
    other = [-math.inf, 0.0, -1.0]  # a zero in the other model where the reference has mass
    kl = first_token_kl(ref, other)
    assert math.isfinite(kl) and kl > 100
    assert first_token_kl([0.0, -math.inf], [0.0, -math.inf]) == 0.0
    with pytest.raises(UserInputError, match="length"):
        first_token_kl([0.0], [0.0, 0.0])
    with pytest.raises(UserInputError, match="nan"):
        first_token_kl([math.nan, 0.0], [0.0, 0.0])


@given(
    st.lists(st.floats(-50, 0), min_size=2, max_size=20).flatmap(
        lambda a: st.tuples(st.just(a), st.lists(st.floats(-50, 0), min_size=len(a), max_size=len(a)))
    )
)
def test_first_token_kl_is_never_negative(pair):
    a, b = pair
    assert first_token_kl(a, b) >= 0.0
    assert first_token_kl(a, a) == pytest.approx(0.0, abs=1e-12)


def test_first_token_top1_and_summary():
    ref = {("q1", 0): [-0.1, -3.0, -4.0], ("q2", 0): [-2.0, -0.2, -3.0]}
    same = {k: list(v) for k, v in ref.items()}
    flipped = {("q1", 0): [-3.0, -0.1, -4.0], ("q2", 0): [-2.0, -0.2, -3.0]}
    assert first_token_top1(ref[("q1", 0)], same[("q1", 0)])
    assert not first_token_top1(ref[("q1", 0)], flipped[("q1", 0)])

    s = summarize_first_token(ref, same)
    assert (s.n, s.mean_kl, s.max_kl, s.top1_pct) == (2, 0.0, 0.0, 100.0)
    s = summarize_first_token(ref, flipped)
    kl = first_token_kl(ref[("q1", 0)], flipped[("q1", 0)])
    assert s.top1_pct == 50.0
    assert s.max_kl == pytest.approx(kl) and s.mean_kl == pytest.approx(kl / 2)


# ---------------------------------------------------------------------------------------------
# Pointwise scores


@settings(deadline=None)  # the first example imports scipy
@given(st.lists(st.floats(-50, 50, allow_nan=False), min_size=2, max_size=40, unique=True),
       st.floats(0.01, 100), st.floats(-100, 100))
def test_score_correlations_see_only_the_order_of_the_scores(scores, scale, shift):
    """A positive affine map (a quant that rescales logits) keeps τ and ρ at 1; negating reverses them."""
    from dear_local_convert.agreement.metrics import score_correlations

    moved = [scale * s + shift for s in scores]
    if len(set(moved)) < len(moved):  # rounding merged two scores: not the case under test
        return
    assert score_correlations(scores, moved) == pytest.approx((1.0, 1.0))
    assert score_correlations(scores, [-s for s in moved]) == pytest.approx((-1.0, -1.0))


def test_score_correlations_edge_cases_and_bad_input():
    from dear_local_convert.agreement.metrics import score_correlations

    assert score_correlations([1.0], [5.0]) == (1.0, 1.0)
    assert score_correlations([2.0, 2.0, 2.0], [0.0, 0.0, 0.0]) == (1.0, 1.0)
    assert score_correlations([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]) == (0.0, 0.0)
    tau, rho = score_correlations([1, 2, 3, 4], [1, 3, 2, 4])
    assert tau == pytest.approx(4 / 6) and rho == pytest.approx(0.8)
    for a, b in (([1.0, 2.0], [1.0]), ([1.0, float("nan")], [1.0, 2.0]), ([1.0, 2.0], [float("inf"), 0.0])):
        with pytest.raises(UserInputError):
            score_correlations(a, b)


def test_each_kind_of_check_refuses_the_other_kinds_gates_by_name():
    from dear_local_convert.agreement.gates import GATES, POINTWISE_GATES, check_gates, parse_gate_overrides

    both = parse_gate_overrides(["min_top10_overlap=0.9", "min_exact_match=0.5"])
    assert both == {"min_top10_overlap": 0.9, "min_exact_match": 0.5}
    with pytest.raises(UserInputError, match=r"unknown gate 'min_top10_overlap'; gates are: min_mean_kendall_tau"):
        check_gates({"min_top10_overlap": 0.9}, "--gate", GATES)
    with pytest.raises(UserInputError, match=r"unknown gate 'min_exact_match'; a pointwise ranker's gates are"):
        check_gates({"min_exact_match": 0.5}, "--gate", POINTWISE_GATES)
