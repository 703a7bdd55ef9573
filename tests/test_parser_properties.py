"""The parser's rule, as properties: ids joined by list connectives are one run (the model's
first choice kept), and reasoning that mentions ids before the final ranking is skipped."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dear_local.contract import parse_ranking

# What joins two ids inside one ranking: punctuation, arrows and the connective words.
CONNECTIVES = [
    ", ", ",", " ", "; ", " → ", " -> ", " >> ", " > ", "\n",
    " then ", ", then ", " and ", ", and ", " and then ", ", followed by ", " followed by ",
    " finally ", ", and finally ", "; finally, ", " next ", ", next, ", " lastly ", ", after that ",
    " Then ", " AND ", ", Followed By ",
]
LEADS = ["", "Most relevant first: ", "Ranking: ", "The order is ", "Answer:\n", "Final ranking: "]
ENDS = ["", ".", "\n", " (most to least relevant).", "\nThat is my ranking."]

# Reasoning sentences; each mentions one or two ids and ends in prose or a full stop, as
# chain-of-thought does before the answer.
REASONING = [
    "Passage {a} talks about {w}.",
    "{a} mentions {w}, which matters.",
    "{a} and {b} both discuss {w}.",
    "Comparing {a} with {b}, the first is closer to {w}.",
    "I think {a} is better than {b} because of {w}.",
    "{a} is off topic.",
    "Then {a} is about {w}.",
    "Next, {a} and then {b} cover {w}.",
]
WORDS = ["Paris", "bananas", "the query", "history", "the capital"]


def _ids(order, base):
    return [f"[{i + base}]" for i in order]


@st.composite
def joined_rankings(draw):
    n = draw(st.integers(2, 20))
    base = draw(st.sampled_from([0, 1]))
    perm = draw(st.permutations(list(range(n))))
    seps = draw(st.lists(st.sampled_from(CONNECTIVES), min_size=n - 1, max_size=n - 1))
    ids = _ids(perm, base)
    text = ids[0] + "".join(s + i for s, i in zip(seps, ids[1:]))
    return draw(st.sampled_from(LEADS)) + text + draw(st.sampled_from(ENDS)), n, base, list(perm)


@settings(max_examples=400, deadline=None)
@given(joined_rankings())
def test_ids_joined_by_connectives_are_one_ranking(case):
    text, n, base, perm = case
    parsed = parse_ranking(text, n, base)
    assert parsed.order == perm and parsed.status == "ok", text


@st.composite
def reasoned_rankings(draw):
    n = draw(st.integers(2, 12))
    base = draw(st.sampled_from([0, 1]))
    perm = draw(st.permutations(list(range(n))))
    sentences = []
    for _ in range(draw(st.integers(1, 6))):
        a, b = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
        sentences.append(
            draw(st.sampled_from(REASONING)).format(a=f"[{a + base}]", b=f"[{b + base}]", w=draw(st.sampled_from(WORDS)))
        )
    reasoning = draw(st.sampled_from([" ", "\n"])).join(sentences)
    seps = draw(st.lists(st.sampled_from(CONNECTIVES), min_size=n - 1, max_size=n - 1))
    ids = _ids(perm, base)
    final = ids[0] + "".join(s + i for s, i in zip(seps, ids[1:]))
    lead = draw(st.sampled_from(["\nSo the ranking is: ", "\n\nFinal ranking: ", " Therefore: ", "\nAnswer: "]))
    think = draw(st.booleans())
    if think:
        return f"<think>{reasoning}</think>{final}", n, base, list(perm)
    return reasoning + lead + final + draw(st.sampled_from(ENDS)), n, base, list(perm)


@settings(max_examples=400, deadline=None)
@given(reasoned_rankings())
def test_reasoning_that_mentions_ids_before_the_ranking_is_skipped(case):
    text, n, base, perm = case
    parsed = parse_ranking(text, n, base)
    assert parsed.order == perm and parsed.status == "ok", text


def test_the_issue_example_keeps_the_first_choice():
    parsed = parse_ranking("Most relevant first: [4], then [2], [0], [1], [3]", 5, 0)
    assert parsed.order == [4, 2, 0, 1, 3] and parsed.status == "ok"


def test_other_words_still_end_a_run():
    # "is best" is prose, not a connective: with a sentence end as well, the two runs are
    # apart and neither names every id, so the last run of two or more ids is the answer.
    parsed = parse_ranking("[4] is best. Then [2], [0], [1], [3]", 5, 0)
    assert parsed.order == [2, 0, 1, 3, 4]
    # in one sentence the ids name every passage once: a ranking written in prose
    assert parse_ranking("[4] is best, then [2], [0], [1], [3]", 5, 0).order == [4, 2, 0, 1, 3]
    # words that merely contain a connective do not join ids
    assert parse_ranking("[2] sand [0] > [1]", 4, 0).order == [0, 1, 2, 3]


# A remark after a complete ranking that mentions some ids again, joined as a run of its own.
REMARKS = [
    ". Note that {a} and {b} are close.",
    "\nAlso, {a} and {b} are nearly tied.",
    " ({a} > {b} was a hard call)",
    ". I am unsure about {a}, {b}.",
    "\nNote: {a} then {b} could swap.",
]


@st.composite
def rankings_with_remarks(draw):
    n = draw(st.integers(3, 20))  # a remark names two ids, so it is never itself complete
    base = draw(st.sampled_from([0, 1]))
    perm = draw(st.permutations(list(range(n))))
    seps = draw(st.lists(st.sampled_from(CONNECTIVES), min_size=n - 1, max_size=n - 1))
    ids = _ids(perm, base)
    ranking = ids[0] + "".join(s + i for s, i in zip(seps, ids[1:]))
    a, b = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
    remark = draw(st.sampled_from(REMARKS)).format(a=f"[{a + base}]", b=f"[{b + base}]")
    return draw(st.sampled_from(LEADS)) + ranking + remark, n, base, list(perm)


@settings(max_examples=300, deadline=None)
@given(rankings_with_remarks())
def test_a_remark_after_a_complete_ranking_does_not_replace_it(case):
    text, n, base, perm = case
    parsed = parse_ranking(text, n, base)
    assert parsed.order == perm and parsed.status == "ok" and parsed.model_ids == n, text


CJK_SEPARATORS = ["\u3001", "\uff0c", "\uff1b", " \u3001 ", "\uff0c "]


@st.composite
def cjk_rankings(draw):
    n = draw(st.integers(2, 20))
    base = draw(st.sampled_from([0, 1]))
    perm = draw(st.permutations(list(range(n))))
    seps = draw(st.lists(st.sampled_from(CJK_SEPARATORS + [" > ", ", "]), min_size=n - 1, max_size=n - 1))
    ids = _ids(perm, base)
    text = ids[0] + "".join(s + i for s, i in zip(seps, ids[1:]))
    lead = draw(st.sampled_from(["", "\u6392\u5e8f\uff1a", "Ranking: "]))
    return lead + text + draw(st.sampled_from(["", "\u3002", "."])), n, base, list(perm)


@settings(max_examples=300, deadline=None)
@given(cjk_rankings())
def test_cjk_list_punctuation_joins_a_ranking(case):
    text, n, base, perm = case
    parsed = parse_ranking(text, n, base)
    assert parsed.order == perm and parsed.status == "ok", text


ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth"]


@st.composite
def ordinal_rankings(draw):
    n = draw(st.integers(2, 10))
    base = draw(st.sampled_from([0, 1]))
    perm = draw(st.permutations(list(range(n))))
    words = ORDINALS[:n]
    if draw(st.booleans()):
        words = words[:-1] + ["last"]
    case = draw(st.sampled_from([str.lower, str.capitalize, str.upper]))
    glue = draw(st.sampled_from([", ", "; ", " ", ", and "]))
    ids = _ids(perm, base)
    text = glue.join(f"{case(w)} {i}" for w, i in zip(words, ids))
    return text[0].upper() + text[1:] + draw(st.sampled_from(ENDS)), n, base, list(perm)


@settings(max_examples=300, deadline=None)
@given(ordinal_rankings())
def test_ordinal_words_join_a_ranking(case):
    text, n, base, perm = case
    parsed = parse_ranking(text, n, base)
    assert parsed.order == perm and parsed.status == "ok", text


def test_the_rerun_examples_keep_the_models_order():
    for text in (
        "Ranking: [4] > [2] > [0] > [1] > [3]. Note that [1] and [3] are close.",
        "[4] is best, followed by [2], then [0], [1] and [3].",
        "First [4], second [2], third [0], fourth [1], fifth [3]",
        "[4]\u3001[2]\u3001[0]\u3001[1]\u3001[3]",
    ):
        assert parse_ranking(text, 5, 0).order == [4, 2, 0, 1, 3], text


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 20), st.sampled_from([0, 1]), st.data())
def test_model_ids_counts_the_ids_the_answer_gave(n, base, data):
    named = data.draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n))
    junk = data.draw(st.lists(st.integers(n + base, n + base + 50), max_size=3))
    text = " > ".join(f"[{i + base}]" for i in named + junk)
    parsed = parse_ranking(text, n, base)
    assert parsed.model_ids == len(named)
    assert parsed.order[: len(named)] == named and sorted(parsed.order) == list(range(n))
