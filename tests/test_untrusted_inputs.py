"""Inputs from users and the web: invalid Unicode, blank lines, over-long documents.

Errors must come before the model loads: the CLI tests pass a model path that
does not exist, so a check that ran after loading would report that instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dear_local import Profile, Reranker
from dear_local.backends.llama import LlamaCppBackend
from dear_local.errors import UserInputError
from dear_local.inputs import jsonl_requests, lines_request

CJK_DOC = "巴黎是法国的首都也是最大的城市" * 400
QUERY = "capital of France"


def run(*args, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dear_local", *args], input=stdin, capture_output=True,
                          env={**os.environ}, timeout=1800)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    assert err.startswith("error: ")
    return err


# -- invalid Unicode ----------------------------------------------------------------
def test_a_latin1_query_argument_is_refused_before_the_model_loads(tmp_path):
    docs = tmp_path / "two.txt"
    docs.write_text("Paris is the capital of France.\nBananas are yellow.\n")
    proc = run("rerank", "-m", str(tmp_path / "never-loaded.gguf"), "-q", b"caf\xe9 in Paris", "--docs", str(docs))
    err = one_line_error(proc)
    assert "--query is not valid text" in err and "0xe9" in err and "iconv" in err


def test_a_jsonl_record_with_a_lone_surrogate_is_refused_by_record(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"query": "q", "documents": ["fine"]}\n{"query": "q", "documents": ["ok", "bad \\ud800 text"]}\n')
    proc = run("rerank", "-m", str(tmp_path / "never-loaded.gguf"), "--jsonl", str(path))
    err = one_line_error(proc)
    assert f"{path} line 2: the field documents[1] is not valid text" in err and "U+D800" in err


@pytest.mark.parametrize("record,where", [
    ({"query": "bad \ud800", "documents": ["a"]}, "line 1: the field query is not valid text"),
    ({"query": "q", "hits": [{"content": "a", "docid": "d\udfff"}]}, r"line 1: the field hits\[0\]\.docid is not"),
    ({"query": "q", "hits": [{"content": "x\udc00"}]}, r"line 1: the field hits\[0\]\.content is not"),
])
def test_jsonl_records_name_the_field_that_is_not_text(record, where):
    text = json.dumps(record)  # ensure_ascii keeps the lone surrogate as a \\u escape
    with pytest.raises(UserInputError, match=where):
        jsonl_requests(text, "in.jsonl")


@pytest.fixture(scope="module")
def vocab_reranker(standin_gguf):
    """A reranker over the stand-in's vocabulary only: input checks need no weights."""
    r = Reranker("stand-in", backend=LlamaCppBackend(standin_gguf, vocab_only=True))
    yield r
    r.close()


def test_the_python_api_raises_user_input_error_for_a_lone_surrogate(vocab_reranker):
    with pytest.raises(UserInputError, match="document 1 is not valid text.*U\\+D800"):
        vocab_reranker.rerank(QUERY, ["ok", "bad \ud800 text"])
    with pytest.raises(UserInputError, match="the query is not valid text"):
        vocab_reranker.rerank("caf\udce9", ["ok", "fine"])


@settings(max_examples=100, deadline=None)
@given(st.text(), st.integers(0, 0xDFFF - 0xD800), st.integers(0, 20))
def test_any_text_with_a_lone_surrogate_is_refused_by_the_api(vocab_reranker, text, offset, where):
    bad = text[:where] + chr(0xD800 + offset) + text[where:]
    with pytest.raises(UserInputError, match="document 0 is not valid text"):
        vocab_reranker.rerank(QUERY, [bad, "fine"])


# -- blank lines --------------------------------------------------------------------
def test_blank_lines_keep_docids_on_line_numbers():
    req = lines_request("Bananas are yellow.\nParis is the capital.\n\nThe Eiffel Tower is in Paris.\n", QUERY)
    assert req.documents == ["Bananas are yellow.", "Paris is the capital.", "The Eiffel Tower is in Paris."]
    assert req.docids == ["0", "1", "3"]  # the passage on line 4 is docid 3, not 2


def test_only_newlines_end_a_line():
    text = "a\x0cb\u2028c\r\n \t \r\nd\x1ce\n"
    req = lines_request(text, QUERY)
    assert req.documents == ["a\x0cb\u2028c", "d\x1ce"] and req.docids == ["0", "2"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.just(""), st.just("   "), st.text(st.characters(blacklist_characters="\n"))),
                max_size=30), st.booleans(), st.booleans())
def test_a_docid_is_the_documents_line_whatever_surrounds_it(lines, crlf, final_newline):
    text = ("\r\n" if crlf else "\n").join(lines) + ("\n" if final_newline and lines else "")
    req = lines_request(text, QUERY)
    file_lines = text.removeprefix("\ufeff").split("\n")  # a leading byte-order mark is not part of line 0
    for doc, docid in zip(req.documents, req.docids):
        assert file_lines[int(docid)].removesuffix("\r") == doc and doc.strip()
    assert len(req.documents) == sum(1 for ln in file_lines if ln.strip())


def test_trec_output_gives_the_line_number_after_a_blank_line(standin_gguf, tmp_path):
    docs = tmp_path / "docs.txt"
    docs.write_text("Bananas are yellow.\nCats sleep a lot.\n\nParis is the capital of France.\n")
    proc = run("rerank", "-m", str(standin_gguf), "--template", "rankgpt-chat", "-q", QUERY, "--docs", str(docs),
               "--format", "trec")
    assert proc.returncode == 0, proc.stderr.decode()
    docids = sorted(line.split()[2] for line in proc.stdout.decode().splitlines())
    assert docids == ["0", "1", "3"]


# -- one long document never fails a request ------------------------------------------
def test_the_http_example_with_a_long_chinese_document_is_ranked_not_refused(standin_gguf):
    """Before: 422 'the prompt ... needs 10643 tokens ... the context holds 10496'."""
    from dear_local.server import ServerSettings, create_app
    from dear_local.server.runner import background

    reranker = Reranker(str(standin_gguf), profile=Profile(template="rankgpt-chat"))
    settings = ServerSettings(model=str(standin_gguf), max_body_bytes=1 << 20)
    try:
        with background(create_app(settings, reranker=reranker), settings) as url:
            resp = httpx.post(f"{url}/v1/rerank", json={"query": QUERY, "documents": [
                "Paris is the capital of France.", CJK_DOC]}, timeout=600)
    finally:
        reranker.close()
    assert resp.status_code == 200, resp.text
    body = resp.json()
    flags = {r["index"]: r["truncated"] for r in body["results"]}
    assert flags == {0: False, 1: True}
    # one truncation warning; the stand-in's answer may also fail to parse (a second, unrelated warning)
    (warning,) = [w for w in body["meta"]["warnings"] if "passage limit" in w]
    assert "index 1" in warning and "640 tokens" in warning
    assert body["meta"]["tokens"]["input_tokens"] < reranker.profile.context_tokens()


def test_the_cli_ranks_a_long_chinese_document_and_warns(standin_gguf, tmp_path):
    docs = tmp_path / "two.txt"
    docs.write_text(f"Paris is the capital of France.\n{CJK_DOC}\n", encoding="utf-8")
    proc = run("rerank", "-m", str(standin_gguf), "--template", "rankgpt-chat", "-q", QUERY, "--docs", str(docs),
               "--format", "json")
    assert proc.returncode == 0, proc.stderr.decode()
    (record,) = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert {r["docid"]: r["truncated"] for r in record["results"]} == {"0": False, "1": True}
    assert "warning: query q0: 1 document(s) (docid 1)" in proc.stderr.decode()
