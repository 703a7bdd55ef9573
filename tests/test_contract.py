"""The ranking contract: templates, profile budget, parser and sliding windows."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dear_local.contract import (
    STATUSES,
    Profile,
    get_template,
    is_complete,
    list_templates,
    parse_ranking,
    window_spans,
)
from dear_local.errors import UnknownProfileError, UnknownTemplateError

CARD_QUERY = "When did Thomas Edison invent the light bulb?"
CARD_DOCS = [
    "Lightning strike at Seoul National University",
    "Thomas Edison tried to invent a device for car but failed",
    "Coffee is good for diet",
    "KEPCO fixes light problems",
    "Thomas Edison invented the light bulb in 1879",
]
CARD_PROMPT = (
    "I will provide you with 5 passages, each indicated by a number identifier [].\n"
    "Rank the passages based on their relevance to the search query: When did Thomas Edison invent the light bulb?.\n"
    "\n"
    "[0] Lightning strike at Seoul National University\n"
    "[1] Thomas Edison tried to invent a device for car but failed\n"
    "[2] Coffee is good for diet\n"
    "[3] KEPCO fixes light problems\n"
    "[4] Thomas Edison invented the light bulb in 1879\n"
    "\n"
    "Search Query: When did Thomas Edison invent the light bulb?.\n"
    "Rank the passages above based on their relevance to the search query. Output the ranking as a list of numbers."
)


def test_card_template_reproduces_the_model_card_prompt_byte_for_byte():
    assert get_template("card").render_raw(CARD_QUERY, CARD_DOCS) == CARD_PROMPT


def test_card_template_cuts_passages_to_300_characters():
    text = get_template("card").render_raw("q", ["x" * 500])
    assert "[0] " + "x" * 300 + "\n\nSearch Query" in text


def test_rankgpt_chat_messages_match_prompts_md_string_for_string():
    msgs = get_template("rankgpt-chat").render_messages("what is x", ["Title: Content: alpha  beta", "gamma"])
    assert msgs == [
        {"role": "system", "content": "You are RankLLM, an assistant that ranks passages by relevance to the query."},
        {
            "role": "user",
            "content": "I will provide you with 2 passages, each indicated by number identifier [].\n"
            "Rank the passages based on their relevance to query: what is x.",
        },
        {"role": "assistant", "content": "Okay, please provide the passages."},
        {"role": "user", "content": "[1] alpha beta"},
        {"role": "assistant", "content": "Received passage [1]."},
        {"role": "user", "content": "[2] gamma"},
        {"role": "assistant", "content": "Received passage [2]."},
        {
            "role": "user",
            "content": "Search Query: what is x.\n"
            "Rank the 2 passages above based on their relevance to the search query. "
            "The passages should be listed in descending order using identifiers.\n"
            "Please follow the steps below:\n"
            "Step 1. List the information requirements to answer the query.\n"
            "Step 2. For each requirement, find the passages containing that information.\n"
            "Step 3. Rank passages that best cover clear and diverse information. Include all passages.\n"
            "Output format strictly: [2] > [1] > [3] ... Only output the ranking using identifiers; no explanations.",
        },
    ]


def test_rankgpt_chat_cuts_passages_to_300_words():
    msgs = get_template("rankgpt-chat").render_messages("q", [" ".join(["w"] * 400)])
    assert msgs[3]["content"] == "[1] " + " ".join(["w"] * 300)


def test_templates_are_listed_and_unknown_names_are_refused():
    assert {t.name for t in list_templates()} == {"card", "rankgpt-chat"}
    with pytest.raises(UnknownTemplateError, match="choose one of"):
        get_template("nope")


def test_output_budget_fits_a_whole_20_id_permutation():
    p = Profile()
    assert p.max_new_tokens() > 50  # the card's 50 tokens cut a 20-id ranking short
    assert p.max_new_tokens(20) >= 20 * 5


@pytest.mark.parametrize(
    "change", [{"decoding": "beam"}, {"window": 0}, {"stride": 0}, {"stride": 30}, {"template": "x"}]
)
def test_invalid_profiles_are_refused(change):
    with pytest.raises((UnknownProfileError, UnknownTemplateError)):
        Profile(**change)


def test_profile_round_trips_through_a_dict():
    p = Profile(template="rankgpt-chat", window=10, stride=5, decoding="greedy")
    assert Profile.from_dict(p.to_dict()) == p


@pytest.mark.parametrize(
    "text,n,base,order,status",
    [
        ("[4] > [1] > [0] > [3] > [2]", 5, 0, [4, 1, 0, 3, 2], "ok"),
        ("[2] > [1] > [3]", 3, 1, [1, 0, 2], "ok"),
        ("Let me think [9]</think>[1] > [0] > [2]", 3, 0, [1, 0, 2], "ok"),
        ("[1] > [1] > [0]", 3, 0, [1, 0, 2], "repetition"),
        ("[2] > [0]", 3, 0, [2, 0, 1], "missing_documents"),
        ("[2] > [7] > [0] > [1]", 3, 0, [2, 0, 1], "repetition"),  # more ids than passages, as rank_llm counts it
        ("I think 2 then 0", 3, 0, [2, 0, 1], "wrong_format"),
        ("", 3, 0, [0, 1, 2], "wrong_format"),
        ("notes [1] > [2] ... final: [2] > [0] > [1]", 3, 0, [2, 0, 1], "ok"),
    ],
)
def test_parser_cases(text, n, base, order, status):
    parsed = parse_ranking(text, n, base)
    assert parsed.order == order
    assert parsed.status == status


@settings(max_examples=300, deadline=None)
@given(text=st.text(), n=st.integers(1, 40), base=st.sampled_from([0, 1]))
def test_parser_returns_a_permutation_for_any_text(text, n, base):
    parsed = parse_ranking(text, n, base)
    assert sorted(parsed.order) == list(range(n))
    assert parsed.status in STATUSES


@settings(max_examples=200, deadline=None)
@given(perm=st.permutations(list(range(12))), base=st.sampled_from([0, 1]))
def test_parser_reads_back_any_well_formed_permutation(perm, base):
    text = " > ".join(f"[{i + base}]" for i in perm)
    assert parse_ranking(text, 12, base).order == list(perm)
    assert is_complete(text, 12, base)
    assert not is_complete(text.rsplit(" > ", 1)[0], 12, base)


def test_100_candidates_with_window_20_stride_10_give_9_windows():
    spans = window_spans(100, 20, 10)
    assert len(spans) == 9
    assert spans[0] == (80, 100) and spans[-1] == (0, 20)


@settings(max_examples=500, deadline=None)
@given(n=st.integers(1, 300), window=st.integers(2, 40), data=st.data())
def test_every_candidate_lies_in_a_window_and_the_head_is_last(n, window, data):
    stride = data.draw(st.integers(1, window - 1))
    spans = window_spans(n, window, stride)
    covered = set()
    for start, end in spans:
        assert 0 <= start < end <= n and end - start <= window
        covered.update(range(start, end))
    assert covered == set(range(n))
    assert spans[-1][0] == 0
