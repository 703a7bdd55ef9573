"""The parser keeps the model's own order whatever separates the ids."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dear_local.contract import is_complete, parse_ranking

# (answer, n, id base, expected order, expected status)
SHAPES = [
    # the examples: the old parser ranked the last-named id first
    ("[3], [1], [2]", 3, 1, [2, 0, 1], "ok"),
    ("[3] [1] [2]", 3, 1, [2, 0, 1], "ok"),
    ("1. [3]\n2. [1]\n3. [2]", 3, 1, [2, 0, 1], "ok"),
    ("[3] → [1] → [2]", 3, 1, [2, 0, 1], "ok"),
    ("[11], [3], [2], [4], [5], [6], [7], [8], [9], [10], [1]", 11, 1, [10, 2, 1, 3, 4, 5, 6, 7, 8, 9, 0], "ok"),
    # the stand-in's greedy list, cut by the output budget after 7 of 10 ids
    ("1. [1] Paris is the capital of France.\n2. [2] Bananas are yellow.\n3. [3] The Seine.\n"
     "4. [4] Lyon.\n5. [5] Marseille.\n6. [6] Nice.\n7. [7] Lille", 10, 1, list(range(10)), "missing_documents"),
    # more separators and list shapes
    ("[3] > [1] > [2]", 3, 1, [2, 0, 1], "ok"),
    ("[3]>[1]>[2]", 3, 1, [2, 0, 1], "ok"),
    ("[3] -> [1] -> [2]", 3, 1, [2, 0, 1], "ok"),
    ("[3] => [1] => [2]", 3, 1, [2, 0, 1], "ok"),
    ("[3] ⇒ [1] ⇒ [2]", 3, 1, [2, 0, 1], "ok"),
    ("[3]; [1]; [2]", 3, 1, [2, 0, 1], "ok"),
    ("[3] | [1] | [2]", 3, 1, [2, 0, 1], "ok"),
    ("[3]\n[1]\n[2]", 3, 1, [2, 0, 1], "ok"),
    ("[3]\n\n[1]\n\n[2]", 3, 1, [2, 0, 1], "ok"),
    ("- [3]\n- [1]\n- [2]", 3, 1, [2, 0, 1], "ok"),
    ("* [3]\n* [1]\n* [2]", 3, 1, [2, 0, 1], "ok"),
    ("• [3]\n• [1]\n• [2]", 3, 1, [2, 0, 1], "ok"),
    ("1) [3]\n2) [1]\n3) [2]", 3, 1, [2, 0, 1], "ok"),
    ("(1) [3] (2) [1] (3) [2]", 3, 1, [2, 0, 1], "ok"),
    ("Rank 1: [3]\nRank 2: [1]\nRank 3: [2]", 3, 1, [2, 0, 1], "ok"),
    ("Rank 1: [3], Rank 2: [1], Rank 3: [2]", 3, 1, [2, 0, 1], "ok"),
    ("#1 [3] #2 [1] #3 [2]", 3, 1, [2, 0, 1], "ok"),
    ("Ranking:\n1. [3] most relevant, it names the city.\n2. [1] mentions France.\n3. [2] is off topic.",
     3, 1, [2, 0, 1], "ok"),
    ("[ 3 ] > [ 1 ] > [ 2 ]", 3, 1, [2, 0, 1], "ok"),
    ("[2] > [0] > [1].", 3, 0, [2, 0, 1], "ok"),
    # chain-of-thought: the last well-formed run wins
    ("Let me think [9]</think>[1] > [0] > [2]", 3, 0, [1, 0, 2], "ok"),
    ("notes [1] > [2] ... final: [2] > [0] > [1]", 3, 0, [2, 0, 1], "ok"),
    ("[0] is about bananas.\n[1] is about Paris.\n[2] is about Lyon.\nSo the ranking is: [1] > [2] > [0]",
     3, 0, [1, 2, 0], "ok"),
    ("Passage [2] looks best. Final answer: [2], [0], [1]", 3, 0, [2, 0, 1], "ok"),
    ("[2] > [0] > [1]\nNote: [1] is off topic.", 3, 0, [2, 0, 1], "ok"),
    # repairs, with rank_llm's meaning of each status
    ("[2] > [0]", 3, 0, [2, 0, 1], "missing_documents"),
    ("[2]", 3, 0, [2, 0, 1], "missing_documents"),
    ("[2], [0], [5]", 3, 0, [2, 0, 1], "missing_documents"),  # an out-of-range id took [1]'s place
    ("[1] > [1] > [0]", 3, 0, [1, 0, 2], "repetition"),
    ("[2], [0], [1], [0]", 3, 0, [2, 0, 1], "repetition"),
    ("[2] > [7] > [0] > [1]", 3, 0, [2, 0, 1], "repetition"),  # more ids than passages
    ("I think 2 then 0", 3, 0, [2, 0, 1], "wrong_format"),
    ("", 3, 0, [0, 1, 2], "wrong_format"),
]


@pytest.mark.parametrize("text,n,base,order,status", SHAPES)
def test_answer_shapes(text, n, base, order, status):
    parsed = parse_ranking(text, n, base)
    assert (parsed.order, parsed.status) == (order, status)


SEPARATORS = [" > ", ">", ", ", ",", " ", "  ", " → ", " -> ", " => ", "; ", " | ", "\n", "\n\n", ",\n", " >\n"]
LIST_STYLES = ["{k}. ", "{k}) ", "- ", "* ", "• ", "Rank {k}: ", "#{k} "]


@st.composite
def answers(draw):
    """A permutation written with random separators, or as a list, maybe after chain-of-thought."""
    n = draw(st.integers(2, 25))  # a window of one passage is never parsed
    base = draw(st.sampled_from([0, 1]))
    perm = draw(st.permutations(list(range(n))))
    if draw(st.booleans()):
        seps = draw(st.lists(st.sampled_from(SEPARATORS), min_size=n, max_size=n))
        body = "".join(f"[{i + base}]" + (seps[k] if k < n - 1 else "") for k, i in enumerate(perm))
    else:
        style = draw(st.sampled_from(LIST_STYLES))
        notes = draw(st.lists(st.sampled_from(["", " relevant.", " mentions the city, in passing."]),
                              min_size=n, max_size=n))
        body = "\n".join(f"{style.format(k=k + 1)}[{i + base}]{notes[k]}" for k, i in enumerate(perm))
    before = draw(st.sampled_from([
        "",
        "Ranking: ",
        "The answer:\n",
        "<think>[1] > [2] seems wrong</think>",
        f"First thought: [{base}] > [{base + 1}] ... no.\nFinal ranking:\n",
    ]))
    return before + body, n, base, list(perm)


@settings(max_examples=400, deadline=None)
@given(answers())
def test_any_separator_keeps_the_models_order(answer):
    text, n, base, perm = answer
    parsed = parse_ranking(text, n, base)
    assert parsed.order == perm, text
    assert parsed.status == "ok", text
    assert is_complete(text, n, base)


@settings(max_examples=300, deadline=None)
@given(perm=st.permutations(list(range(8))), cut=st.integers(1, 7), sep=st.sampled_from(SEPARATORS))
def test_a_cut_answer_keeps_its_order_and_appends_only_the_missing_ids(perm, cut, sep):
    text = sep.join(f"[{i}]" for i in perm[:cut])
    parsed = parse_ranking(text, 8, 0)
    assert parsed.order[:cut] == list(perm[:cut])
    assert parsed.order[cut:] == sorted(perm[cut:])
    assert parsed.status == "missing_documents"
    assert not is_complete(text, 8, 0)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=3000))
def test_any_text_parses_to_a_permutation_in_linear_time(text):
    parsed = parse_ranking(text * 3, 20, 1)
    assert sorted(parsed.order) == list(range(20))
