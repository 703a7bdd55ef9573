"""The llama.cpp backend and the Reranker API on the stand-in model."""

from __future__ import annotations

import pytest

from dear_local import Profile, Reranker
from dear_local.backends.llama import LlamaCppBackend
from dear_local.contract import STATUSES
from dear_local.engine import prompt_ids
from dear_local.errors import ContextOverflowError, InvalidModelFileError, ModelNotFoundError, UserInputError


@pytest.fixture(scope="module")
def reranker(standin_gguf):
    r = Reranker(str(standin_gguf), profile=Profile(template="rankgpt-chat"))
    yield r
    r.close()


def test_python_api_ranks_a_noveleval_query(reranker, noveleval_first3):
    for query, passages in noveleval_first3[:1]:  # the shape of an answer; agreement is test_decoding's and the check's
        resp = reranker.rerank(query, passages)
        assert sorted(r.index for r in resp.results) == list(range(20))
        assert [r.rank for r in resp.results] == list(range(20))
        scores = [r.score for r in resp.results]
        assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
        assert resp.results[0].text == passages[resp.results[0].index]
        (window,) = resp.windows
        assert window.status in STATUSES and window.output_ids and window.raw_text


def test_rank_has_the_sentence_transformers_shape(reranker, noveleval_first3):
    query, passages = noveleval_first3[0]
    out = reranker.rank(query, passages[:5], top_k=3)
    assert len(out) == 3
    assert set(out[0]) == {"corpus_id", "score", "text"}
    assert out[0]["text"] == passages[out[0]["corpus_id"]]


def test_sliding_windows_cover_long_lists(reranker, noveleval_first3):
    query, passages = noveleval_first3[1]
    small = Reranker("unused", profile=Profile(template="rankgpt-chat", window=6, stride=3), backend=reranker.backend)
    docs = [p[:200] for p in passages[:11]]
    resp = small.rerank(query, docs, top_n=5)
    assert len(resp.results) == 5
    assert [(w.start, w.end) for w in resp.windows] == [(5, 11), (2, 8), (0, 5)]
    full = small.rerank(query, docs)
    assert sorted(r.index for r in full.results) == list(range(11))


def test_a_single_document_needs_no_model_call(reranker):
    resp = reranker.rerank("q", ["only one"])
    assert [(r.index, r.rank, r.score) for r in resp.results] == [(0, 0, 1.0)]


def test_generation_stops_as_soon_as_the_permutation_is_complete(reranker, noveleval_first3):
    query, passages = noveleval_first3[2]
    resp = reranker.rerank(query, passages[:3])
    w = resp.windows[0]
    if w.status == "ok":
        assert w.stop_reason in ("complete", "eog")
        assert w.raw_text.rstrip().endswith("]")


@pytest.mark.parametrize("query,docs", [("", ["a"]), ("   ", ["a", "b"]), ("q", [])])
def test_empty_query_or_no_documents_is_refused(reranker, query, docs):
    with pytest.raises(UserInputError):
        reranker.rerank(query, docs)


def test_a_document_that_cannot_fit_the_context_is_refused(standin_gguf):
    r = Reranker(str(standin_gguf), profile=Profile(template="rankgpt-chat"), n_ctx=256)
    with pytest.raises(ContextOverflowError, match="--n-ctx"):
        r.rerank("q", [" ".join(["word"] * 300), "b"])
    r.close()


def test_prompt_tokens_start_with_one_bos_and_use_the_gguf_chat_template(standin_gguf):
    b = LlamaCppBackend(standin_gguf, n_ctx=512, vocab_only=True)
    ids = prompt_ids(b, Profile(template="rankgpt-chat"), "q", ["a", "b"])
    text = b.detokenize(ids)
    assert text.startswith("<|im_start|>system\nYou are RankLLM")
    assert text.endswith("<|im_start|>assistant\n")
    assert b.eog_ids  # <|im_end|> and <|endoftext|>


def test_missing_and_invalid_model_files_are_refused(tmp_path):
    with pytest.raises(ModelNotFoundError):
        Reranker(str(tmp_path / "absent.gguf"))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    with pytest.raises(InvalidModelFileError, match="not a GGUF"):
        Reranker(str(bad))


def test_a_truncated_gguf_is_refused(standin_gguf, tmp_path):
    cut = tmp_path / "cut.gguf"
    with open(standin_gguf, "rb") as f:
        cut.write_bytes(f.read(5_000_000))
    with pytest.raises(InvalidModelFileError, match="truncated"):
        Reranker(str(cut))
