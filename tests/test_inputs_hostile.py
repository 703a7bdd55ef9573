"""Hostile inputs, as classes (issue 22 #5, #14, #16, #17).

- A passage's cost is bounded by the template's token cap, not by the document's length, and
  the bounded cut is the same as cutting the whole text.
- Every JSON input shape refuses a non-string text field (and a non-id id) by record and field.
- The Python API checks argument types before any work, in Python terms; the CLI keeps its flags.
- Inputs read from ``-``, pipes, FIFOs and ``/dev/fd/N``; a UTF-8 byte-order mark is dropped.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dear_local import Reranker
from dear_local.contract import get_template
from dear_local.errors import UserInputError
from dear_local.formats.collection import read_corpus, read_topics
from dear_local.formats.trec import read_run
from dear_local.inputs import jsonl_requests, read_lines_request, read_text
from dear_local.prompt import Passage, cut_passage, spellable, token_cut
from fake_backend import FakeBackend

TEMPLATES = ["card", "rankgpt-chat"]


# -- #5: the passage cut is bounded by the cap ---------------------------------------------------
def full_text_cut(backend, tmpl, text: str) -> Passage:
    """The cut as it was before the bound: the whole snippet tokenized, then cut to the cap."""
    text = spellable(backend, text)
    snippet = tmpl.snippet(text)
    truncated = tmpl.is_cut(text)
    cap = tmpl.max_passage_tokens
    ids = backend.tokenize(snippet, add_bos=False, special=False)  # the whole snippet, however long
    if len(ids) > cap:
        return Passage(token_cut(backend, ids, cap), True)
    return Passage(snippet, truncated)


class Recording:
    """A backend that notes the longest text it was asked to tokenize, passing everything on."""

    def __init__(self, backend) -> None:
        self._backend = backend
        self.longest = 0

    def tokenize(self, text, **kw):
        self.longest = max(self.longest, len(text))
        return self._backend.tokenize(text, **kw)

    def __getattr__(self, name):
        return getattr(self._backend, name)


@pytest.fixture(scope="module")
def llama3_vocab(llama3_vocab_gguf):
    from dear_local.backends.llama import LlamaCppBackend

    b = LlamaCppBackend(llama3_vocab_gguf, vocab_only=True)
    yield b
    b.close()


ALPHABETS = {
    "latin": "abcdefghijklmnopqrstuvwxyz",
    "latin-caps-digits": "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    "cjk": "巴黎是法国的首都也是最大的城市",
    "thai": "กรุงเทพมหานครเป็นเมืองหลวง",
    "symbols": "=-_*#~/\\+.:,;!?'\"()[]{}<>",
    "emoji": "🙂🎉👍🏽é",
    "base64": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
}


@st.composite
def long_texts(draw):
    """Texts past the first prefix: runs of one alphabet, with or without spaces between them."""
    alphabet = draw(st.sampled_from(sorted(ALPHABETS)))
    chars = ALPHABETS[alphabet]
    spaces = draw(st.sampled_from(["", "", " ", "\n", "  \t", " Title: Content: "]))
    runs = draw(st.lists(st.text(st.sampled_from(chars), min_size=1, max_size=draw(st.sampled_from([5, 50, 5000]))),
                         min_size=1, max_size=40))
    text = spaces.join(runs)
    repeat = draw(st.integers(1, max(1, 6000 // max(1, len(text)))))
    return (text + spaces) * repeat


@pytest.mark.parametrize("template", TEMPLATES)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=long_texts(), first=st.sampled_from([1, 2, 4]))
def test_the_bounded_cut_equals_the_full_text_cut(llama3_vocab, template, text, first):
    tmpl = get_template(template)
    assert cut_passage(llama3_vocab, tmpl, text, first_chars_per_token=first) == full_text_cut(llama3_vocab, tmpl, text)


@pytest.mark.parametrize("template", TEMPLATES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=3000),
       first=st.sampled_from([1, 2]))
def test_the_bounded_cut_equals_the_full_text_cut_on_any_text(llama3_vocab, template, text, first):
    tmpl = get_template(template)
    assert cut_passage(llama3_vocab, tmpl, text, first_chars_per_token=first) == full_text_cut(llama3_vocab, tmpl, text)


@pytest.mark.parametrize("doc,cut_short", [
    ("x" * 4_000_000, True),
    ("巴黎是法国的首都" * 500_000, True),
    ("abc def " * 500_000, True),
    (" " * 3_000_000 + "word " * 100, False),
])
def test_a_4_mb_document_costs_what_its_cap_costs(llama3_vocab, doc, cut_short):
    tmpl = get_template("rankgpt-chat")
    rec = Recording(llama3_vocab)
    start = time.perf_counter()
    cut = cut_passage(rec, tmpl, doc)
    seconds = time.perf_counter() - start
    assert cut.truncated == cut_short
    assert doc.lstrip().startswith(cut.text.split(" ")[0])
    assert seconds < 1.0, seconds
    if cut_short:  # nothing near the document's length is ever tokenized
        assert rec.longest <= 200_000, rec.longest


def test_the_template_word_cut_is_applied_first(llama3_vocab):
    tmpl = get_template("rankgpt-chat")
    text = "Title: Content: " + " ".join(f"w{i}" for i in range(5000))
    cut = cut_passage(llama3_vocab, tmpl, text)
    assert cut == full_text_cut(llama3_vocab, tmpl, text)
    assert cut.truncated and cut.text.split()[0] == "w0"


# -- #14: every JSON shape checks its fields alike -----------------------------------------------
BAD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.text(max_size=3), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
BAD_IDS = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False, allow_infinity=False),
                    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def _good(shape: str, i: int) -> dict:
    if shape == "rank_llm":
        return {"query": {"text": "q", "qid": i}, "candidates": [
            {"docid": "d0", "score": 1.0, "doc": {"contents": "a", "title": "t"}},
            {"docid": "d1", "score": 0.5, "doc": {"contents": "b"}}]}
    if shape == "rankgpt":
        return {"query": "q", "qid": str(i), "hits": [{"content": "a", "docid": "d0"}, {"content": "b", "docid": "d1"}]}
    return {"query": "q", "qid": str(i), "documents": ["a", {"text": "b"}]}


# (shape, where the bad value goes, the field name the message must give)
FIELDS = [
    ("rank_llm", lambda r, v: r["query"].__setitem__("text", v), '"query.text"'),
    ("rank_llm", lambda r, v: r["candidates"][1]["doc"].__setitem__("contents", v), '"contents"'),
    ("rank_llm", lambda r, v: r["candidates"][0]["doc"].__setitem__("title", v), '"title"'),
    ("rankgpt", lambda r, v: r.__setitem__("query", v), '"query"'),
    ("rankgpt", lambda r, v: r["hits"][1].__setitem__("content", v), '"content"'),
    ("documents", lambda r, v: r.__setitem__("query", v), '"query"'),
    ("documents", lambda r, v: r["documents"].__setitem__(0, v), "document 1"),
    ("documents", lambda r, v: r["documents"].__setitem__(1, {"text": v}), '"text"'),
]
ID_FIELDS = [
    ("rank_llm", lambda r, v: r["query"].__setitem__("qid", v), '"query.qid"'),
    ("rank_llm", lambda r, v: r["candidates"][1].__setitem__("docid", v), '"docid"'),
    ("rankgpt", lambda r, v: r.__setitem__("qid", v), '"qid"'),
    ("rankgpt", lambda r, v: r["hits"][0].__setitem__("docid", v), '"docid"'),
    ("documents", lambda r, v: r.__setitem__("qid", v), '"qid"'),
]


def _refused(shape, put, value, at, total, name):
    records = [_good(shape, i) for i in range(total)]
    put(records[at], value)
    text = "\n".join(json.dumps(r) for r in records) + "\n"
    with pytest.raises(UserInputError) as exc:
        jsonl_requests(text, "in.jsonl")
    msg = str(exc.value)
    assert f"in.jsonl record {at + 1}" in msg and name in msg, msg


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(FIELDS), value=BAD_VALUES, at=st.integers(0, 3), extra=st.integers(0, 2))
def test_every_shape_refuses_a_text_field_that_is_not_a_string(field, value, at, extra):
    shape, put, name = field
    if name == '"title"' and value is None:
        return  # a null title is no title
    _refused(shape, put, value, at, at + 1 + extra, name)


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(ID_FIELDS), value=BAD_IDS, at=st.integers(0, 3))
def test_every_shape_refuses_an_id_that_is_not_a_string_or_an_integer(field, value, at):
    shape, put, name = field
    _refused(shape, put, value, at, at + 1, name.strip('"').split(".")[-1])


def test_the_issue_values_are_no_longer_ranked_as_text():
    for value in (None, 5, ["x"]):
        line = json.dumps({"query": "q", "hits": [{"content": value, "docid": "d"}]})
        with pytest.raises(UserInputError, match=r'in.jsonl record 1 hit 1: "content" must be a string'):
            jsonl_requests(line, "in.jsonl")


def test_good_records_of_every_shape_still_read():
    for shape in ("rank_llm", "rankgpt", "documents"):
        reqs = jsonl_requests(json.dumps(_good(shape, 0)), "in.jsonl")
        assert reqs[0].documents[1] == "b"
    [req] = jsonl_requests(json.dumps({"query": {"text": "q", "qid": 1}, "candidates": [
        {"docid": 3, "score": None, "doc": {"contents": "a", "title": None}}]}), "rl.jsonl")
    assert req.documents == ["a"] and req.docids == ["3"]


# -- #16: the Python API checks types up front, in Python terms ---------------------------------
@pytest.fixture
def reranker():
    backend = FakeBackend()
    return Reranker("fake", backend=backend)


NOT_A_QUERY = st.one_of(st.none(), st.integers(), st.floats(), st.binary(max_size=4), st.lists(st.text(max_size=2), max_size=2),
                        st.text(" \t\n", max_size=3), st.booleans())
NOT_DOCUMENTS = st.one_of(st.none(), st.integers(), st.text(min_size=1, max_size=5), st.binary(min_size=1, max_size=5),
                          st.dictionaries(st.text(max_size=3), st.text(max_size=3), min_size=1, max_size=3),
                          st.just([]), st.sets(st.text(max_size=3), min_size=1, max_size=3),
                          st.frozensets(st.text(max_size=3), min_size=1, max_size=3),
                          st.lists(st.one_of(st.none(), st.integers(), st.binary(max_size=2)), min_size=1, max_size=3)
                          .map(lambda xs: ["fine", *xs]))
NOT_TOP_N = st.one_of(st.floats(allow_nan=False), st.booleans(), st.integers(max_value=0), st.text(max_size=2))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=NOT_A_QUERY)
def test_a_query_that_is_not_a_non_empty_str_is_refused_in_python_terms(reranker, query):
    for call in (lambda: reranker.rerank(query, ["a", "b"]), lambda: reranker.rank(query, ["a", "b"])):
        with pytest.raises(UserInputError) as exc:
            call()
        assert str(exc.value).startswith("query must be a non-empty str") and "--" not in str(exc.value)
    assert reranker.backend.calls == 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(documents=NOT_DOCUMENTS)
def test_documents_that_are_not_str_items_are_refused_in_python_terms(reranker, documents):
    with pytest.raises(UserInputError) as exc:
        reranker.rerank("q", documents)
    assert str(exc.value).startswith("documents") and "--" not in str(exc.value)
    assert reranker.backend.calls == 0


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(top_n=NOT_TOP_N)
def test_a_bad_top_n_is_refused_before_any_ranking(reranker, top_n):
    with pytest.raises(UserInputError, match="^top_n must be None or an int of at least 1"):
        reranker.rerank("q", ["a", "b", "c"], top_n=top_n)
    with pytest.raises(UserInputError, match="^top_k must be None or an int of at least 1"):
        reranker.rank("q", ["a", "b", "c"], top_k=top_n)
    assert reranker.backend.calls == 0


def test_iterables_of_str_are_read_once(reranker):
    docs = ["Paris", "Lyon", "Nice"]
    from_list = reranker.rerank("q", docs)
    from_gen = reranker.rerank("q", (d for d in docs))
    from_tuple = reranker.rerank("q", tuple(docs), top_n=2)
    assert [r.text for r in from_gen] == [r.text for r in from_list]
    assert [r.index for r in from_tuple] == [r.index for r in from_list][:2]


def test_ordered_views_are_read_and_sets_are_refused(reranker):
    texts = {"a": "Paris", "b": "Lyon"}
    assert sorted(r.text for r in reranker.rerank("q", texts.values())) == ["Lyon", "Paris"]
    assert sorted(r.text for r in reranker.rerank("q", texts.keys())) == ["a", "b"]  # a dict's keys keep their order
    with pytest.raises(UserInputError, match="^documents must be in an order .* got set"):
        reranker.rerank("q", {"Paris", "Lyon"})


def test_more_than_1000_documents_from_a_generator_stop_early(reranker):
    pulled = 0

    def docs():
        nonlocal pulled
        while True:
            pulled += 1
            yield "d"

    with pytest.raises(UserInputError, match="more than the limit of 1000"):
        reranker.rerank("q", docs())
    assert pulled == 1001


def test_the_cli_keeps_its_flag_words(cli, fake_gguf):
    code, _, err = cli("rerank", "-m", str(fake_gguf), "-q", "  ", stdin="a\nb\n")
    assert code == 2 and "--query" in err


# -- #17: pipes, FIFOs, stdin and byte-order marks ------------------------------------------------
def test_docs_and_jsonl_from_dash_read_stdin(cli, fake_gguf):
    code, out, err = cli("rerank", "-m", str(fake_gguf), "-q", "q", "--docs", "-", "--format", "trec", stdin="a\nb\n")
    assert code == 0, err
    assert [line.split()[2] for line in out.splitlines()] == ["1", "0"]
    line = json.dumps({"query": "q", "qid": "7", "documents": ["a", "b"]})
    code, out, err = cli("rerank", "-m", str(fake_gguf), "--jsonl", "-", "--format", "trec", stdin=line + "\n")
    assert code == 0, err
    assert [row.split()[:3] for row in out.splitlines()] == [["7", "Q0", "1"], ["7", "Q0", "0"]]


def _fifo(tmp_path, data: bytes):
    path = tmp_path / "pipe"
    os.mkfifo(path)

    def write():
        with open(path, "wb") as f:
            f.write(data)

    threading.Thread(target=write, daemon=True).start()
    return path


def test_a_fifo_is_read_as_it_streams(tmp_path, cli, fake_gguf):
    path = _fifo(tmp_path, b"first\n\nthird\n")
    req = read_lines_request(path, None, "q")
    assert req.documents == ["first", "third"] and req.docids == ["0", "2"]
    path2 = tmp_path / "jsonl-pipe"
    os.mkfifo(path2)
    threading.Thread(target=lambda: path2.write_bytes(b'{"query": "q", "documents": ["x", "y"]}\n'), daemon=True).start()
    code, out, err = cli("rerank", "-m", str(fake_gguf), "--jsonl", str(path2), "--format", "trec")
    assert code == 0 and len(out.splitlines()) == 2, err


def test_a_dev_fd_path_as_process_substitution_gives_is_read(tmp_path):
    r, w = os.pipe()
    os.write(w, "\ufeffone\ntwo\n".encode())
    os.close(w)
    try:
        req = read_lines_request(f"/dev/fd/{r}", None, "q")
    finally:
        os.close(r)
    assert req.documents == ["one", "two"]


def test_a_directory_and_a_missing_file_say_what_is_wrong(tmp_path):
    with pytest.raises(UserInputError, match="is a directory; pass a file"):
        read_text(tmp_path)
    with pytest.raises(UserInputError, match="does not exist"):
        read_lines_request(tmp_path / "nope.txt", None, "q")
    with pytest.raises(UserInputError, match="is a directory"):
        read_topics(tmp_path)


BOM = b"\xef\xbb\xbf"


def test_a_byte_order_mark_is_dropped_from_every_input(tmp_path):
    docs = tmp_path / "docs.txt"
    docs.write_bytes(BOM + b"alpha\nbeta\n")
    assert read_lines_request(docs, None, "q").documents == ["alpha", "beta"]
    assert read_lines_request(None, io.BytesIO(BOM + b"alpha\n"), "q").documents == ["alpha"]
    jl = tmp_path / "q.jsonl"
    jl.write_bytes(BOM + b'{"query": "q", "documents": ["a"]}\n')
    assert jsonl_requests(read_text(jl), str(jl))[0].documents == ["a"]
    arr = tmp_path / "q.json"
    arr.write_bytes(BOM + b'[{"query": "q", "documents": ["a"]}]')
    assert jsonl_requests(read_text(arr), str(arr))[0].documents == ["a"]
    topics = tmp_path / "topics.tsv"
    topics.write_bytes(BOM + b"1\tcapital of France\n")
    assert read_topics(topics) == {"1": "capital of France"}
    corpus = tmp_path / "corpus.tsv"
    corpus.write_bytes(BOM + b"d1\tParis\n")
    assert read_corpus(corpus, ["d1"]) == {"d1": "Paris"}
    jcorpus = tmp_path / "corpus.jsonl"
    jcorpus.write_bytes(BOM + b'{"id": "d1", "contents": "Paris"}\n')
    assert read_corpus(jcorpus, ["d1"]) == {"d1": "Paris"}
    run = tmp_path / "run.trec"
    run.write_bytes(BOM + b"1 Q0 d1 1 9.5 bm25\n")
    assert list(read_run(run)) == ["1"]


def test_a_byte_order_mark_through_the_cli(cli, fake_gguf, tmp_path):
    jl = tmp_path / "q.jsonl"
    jl.write_bytes(BOM + b'{"query": "q", "qid": "1", "documents": ["a", "b"]}\n')
    code, out, err = cli("rerank", "-m", str(fake_gguf), "--jsonl", str(jl), "--format", "json")
    assert code == 0, err
    code, out, err = cli("rerank", "-m", str(fake_gguf), "-q", "q", "--format", "json", stdin=BOM + b"alpha\nbeta\n")
    assert code == 0, err
    assert "\ufeff" not in json.loads(out)["results"][1]["text"] and "\\ufeff" not in out


# --run, --topics and --corpus read pipes and stdin as --docs and --jsonl do
RUN = "".join(f"{q} Q0 d{q}-{j} {j + 1} {9 - j} bm25\n" for q in (1, 2) for j in range(3))
TOPICS = "1\tcapital of France\n2\tyellow fruit\n"
CORPUS_TSV = "".join(f"d{q}-{j}\tpassage {q} {j}\n" for q in (1, 2) for j in range(3))
CORPUS_JSONL = "".join(json.dumps({"id": f"d{q}-{j}", "contents": f"passage {q} {j}"}) + "\n"
                       for q in (1, 2) for j in range(3))
SOURCES = st.sampled_from(["file", "pipe", "fifo", "stdin"])


def _source(kind: str, data: str, tmp, name: str, fds: list) -> str:
    if kind == "file":
        path = tmp / name
        path.write_text(data, encoding="utf-8")
        return str(path)
    if kind == "pipe":  # what <(cmd) gives: /dev/fd/N of a pipe
        r, w = os.pipe()
        os.write(w, data.encode())
        os.close(w)
        fds.append(r)
        return f"/dev/fd/{r}"
    if kind == "fifo":
        path = tmp / ("fifo-" + name)
        os.mkfifo(path)
        threading.Thread(target=lambda: path.write_bytes(data.encode()), daemon=True).start()
        return str(path)
    return "-"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.tuples(SOURCES, SOURCES, SOURCES).filter(lambda k: k.count("stdin") <= 1), jsonl=st.booleans())
def test_run_topics_and_corpus_read_files_pipes_fifos_and_stdin_alike(cli, fake_gguf, tmp_path_factory, kinds, jsonl):
    tmp = tmp_path_factory.mktemp("sources")
    corpus = CORPUS_JSONL if jsonl else CORPUS_TSV
    data = [RUN, TOPICS, corpus]
    names = ["run.trec", "topics.tsv", "corpus.jsonl" if jsonl else "corpus.tsv"]
    expected_args = ["rerank", "-m", str(fake_gguf), "--format", "trec"]
    for flag, text, name in zip(("--run", "--topics", "--corpus"), data, names):
        path = tmp / ("expected-" + name)
        path.write_text(text, encoding="utf-8")
        expected_args += [flag, str(path)]
    code, expected, err = cli(*expected_args)
    assert code == 0 and len(expected.splitlines()) == 6, err
    fds: list = []
    try:
        args = ["rerank", "-m", str(fake_gguf), "--format", "trec"]
        for flag, kind, text, name in zip(("--run", "--topics", "--corpus"), kinds, data, names):
            args += [flag, _source(kind, text, tmp, name, fds)]
        stdin = data[kinds.index("stdin")] if "stdin" in kinds else ""
        code, out, err = cli(*args, stdin=stdin)
    finally:
        for fd in fds:
            os.close(fd)
    assert code == 0, (kinds, err)
    assert out == expected


@pytest.mark.parametrize("first, second", [("-", "-"), ("-", "/dev/stdin"), ("/dev/stdin", "/dev/fd/0"),
                                           ("/proc/self/fd/0", "-")])
def test_only_one_of_run_topics_and_corpus_can_be_stdin(cli, fake_gguf, tmp_path, first, second):
    """Every name of standard input counts: two of them would read one stream twice."""
    corpus = tmp_path / "corpus.tsv"
    corpus.write_text(CORPUS_TSV, encoding="utf-8")
    code, out, err = cli("rerank", "-m", str(fake_gguf), "--run", first, "--topics", second, "--corpus", str(corpus),
                         stdin=RUN)
    assert code == 2 and out == "" and len(err.splitlines()) == 1, err
    assert "--run and --topics" in err and "standard input" in err and "does not exist" not in err
    code, _, err = cli("rerank", "-m", str(fake_gguf), "--run", str(tmp_path / "nope.trec"), "--topics", "-",
                       "--corpus", str(corpus), stdin=TOPICS)
    assert code == 2 and "nope.trec does not exist" in err
    code, _, err = cli("rerank", "-m", str(fake_gguf), "--run", str(tmp_path), "--topics", "-",
                       "--corpus", str(corpus), stdin=TOPICS)
    assert code == 2 and "is a directory" in err


def test_a_corpus_named_without_a_suffix_is_read_by_its_first_line(tmp_path):
    jsonl = tmp_path / "collection"
    jsonl.write_text("\n" + CORPUS_JSONL, encoding="utf-8")
    tsv = tmp_path / "collection-tsv"
    tsv.write_text(CORPUS_TSV, encoding="utf-8")
    wanted = ["d1-0", "d2-2"]
    assert read_corpus(jsonl, wanted) == read_corpus(tsv, wanted) == {"d1-0": "passage 1 0", "d2-2": "passage 2 2"}
    named_tsv = tmp_path / "odd.tsv"
    named_tsv.write_text('{"x"}\tbraces are text here\n', encoding="utf-8")
    assert read_corpus(named_tsv, ['{"x"}']) == {'{"x"}': "braces are text here"}
