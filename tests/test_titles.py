"""A document's title inside its text: joined as rank_llm joins it, split back for a pointwise ranker."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dear_local.contract.titles import SEPARATOR, join_title, split_title

TEXT = st.text(max_size=40)


@given(title=TEXT.filter(lambda t: SEPARATOR not in t), text=TEXT)
def test_a_joined_title_splits_back(title, text):
    joined = join_title(title, text)
    assert split_title(joined) == ((title, text) if title else ("", text))


@given(text=TEXT.filter(lambda t: not t.startswith("Title: ")))
def test_an_untitled_text_is_read_whole(text):
    assert split_title(text) == ("", text)


def test_the_join_is_rank_llms():
    assert join_title("Llama", "The llama is a camelid") == "Title: Llama Content: The llama is a camelid"
    assert join_title("", "text") == "text"
    assert split_title("Title: no separator") == ("", "Title: no separator")


@settings(deadline=None)  # the first example imports the formats
@given(title=TEXT.filter(lambda t: t and SEPARATOR not in t), text=TEXT)
def test_a_rank_llm_candidate_with_a_title_splits_back_to_its_fields(title, text):
    from dear_local.formats.rank_llm import doc_text

    assert split_title(doc_text({"title": title, "text": text}, "candidate 0")) == (title, text)


def test_the_truncation_warning_names_the_limits_that_applied():
    from dear_local.contract import get_template
    from dear_local.contract.pointwise import get_pointwise_template
    from dear_local.prompt import truncation_warning

    card, dear_p = get_template("card"), get_pointwise_template("dear-p")
    alone = truncation_warning(card, ["d1"], "docid", pointwise=dear_p, listwise=False)
    assert "dear-p pointwise template's limit of 228 tokens" in alone and "card" not in alone
    both = truncation_warning(card, ["d1"], "docid", pointwise=dear_p)
    assert "228 tokens" in both and "card template's passage limit" in both
    assert "card template's passage limit" in truncation_warning(card, [3])
