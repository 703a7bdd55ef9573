"""Second hostile re-run of issue 22: each finding's class, as properties where it is a space.

- a query's cost is bounded by the context, not by the query (F12);
- ``--docs`` stops reading past ``--depth`` or the document limit (F14);
- a string anywhere in an input record that is not valid Unicode is refused with its field path (F20);
- a window whose answer gave fewer than two usable ids counts as unparsed (F24);
- non-finite first-stage scores are refused (F25);
- hostile JSON (deep nesting, huge integers) is one line everywhere it is read (F28);
- ``--out`` through a symbolic link, resume keys and partial files that are not regular files
  (F18, F19, F21).
"""

from __future__ import annotations

import io
import json
import os
import signal
import time
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dear_local.errors import ContextOverflowError, UserInputError

FIXTURES = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@contextmanager
def within(seconds: int):
    """Fail instead of hanging: SIGALRM after ``seconds``."""
    def boom(*_):
        raise AssertionError(f"took more than {seconds} s")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# -- F12: the query's cost ---------------------------------------------------------------------------


def _counting_backend(n_ctx: int):
    from fake_backend import FakeBackend

    class Counting(FakeBackend):
        """The scripted backend, counting the characters it is asked to tokenize in one call."""

        largest = 0

        def tokenize(self, text, *, add_bos, special=False):
            Counting.largest = max(Counting.largest, len(text))
            return super().tokenize(text, add_bos=add_bos, special=special)

    return Counting(n_ctx=n_ctx)


@settings(max_examples=60, deadline=None)
@given(
    n_ctx=st.sampled_from([256, 512, 1024]),
    unit=st.sampled_from(["x", "ab ", "é", "日本", " ", "\u200b", "a" * 40]),
    times=st.integers(0, 40_000),
)
def test_a_query_is_refused_exactly_when_it_alone_overflows_and_costs_a_bounded_read(n_ctx, unit, times):
    from dear_local.prompt import FIRST_CHARS_PER_TOKEN, check_query

    backend = _counting_backend(n_ctx)
    query = (unit * times)[: 60 * n_ctx]
    need = len(backend.tokenize(query, add_bos=False))
    type(backend).largest = 0
    longest = max(map(len, backend.vocab_pieces()))
    try:
        check_query(backend, query)
        refused = False
    except ContextOverflowError as exc:
        refused = True
        assert "query" in str(exc) and "shorten" in str(exc)
    assert type(backend).largest <= 2 * n_ctx * max(longest, FIRST_CHARS_PER_TOKEN)
    if refused:
        assert need > n_ctx  # never refuses a query that fits
    elif len(query) > 2 * n_ctx * max(longest, FIRST_CHARS_PER_TOKEN):
        raise AssertionError("a query past the bound was let through")


def test_a_4_mb_query_is_refused_in_well_under_a_second():
    from fake_backend import FakeBackend

    from dear_local import Profile, Reranker

    reranker = Reranker("fake", profile=Profile(template="rankgpt-chat"), backend=FakeBackend(n_ctx=32768))
    query = "x" * 4_000_000
    t = time.perf_counter()
    with pytest.raises(ContextOverflowError, match="query is too long"):
        reranker.rerank(query, ["a", "b", "c"])
    assert time.perf_counter() - t < 1.0


def test_the_cli_refuses_a_4_mb_jsonl_query_in_one_line(cli, fake_gguf, tmp_path):
    path = tmp_path / "bigq.jsonl"
    path.write_text(json.dumps({"query": "x" * 4_000_000, "documents": ["a", "b"]}) + "\n")
    t = time.perf_counter()
    code, out, err = cli("rerank", "-m", str(fake_gguf), "--jsonl", str(path))
    assert code == 2 and "query is too long" in err and "Traceback" not in err
    assert time.perf_counter() - t < 5.0


# -- F14: --docs reads no more than it needs ------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(depth=st.one_of(st.none(), st.integers(1, 1500)), blank_every=st.integers(0, 5))
def test_docs_stop_reading_past_depth_or_the_limit(depth, blank_every):
    from dear_local.inputs import read_lines_request
    from dear_local.reranker import MAX_DOCUMENTS

    lines = [("" if blank_every and i % (blank_every + 1) == blank_every else f"doc {i}") for i in range(60_000)]
    data = ("\n".join(lines) + "\n").encode()
    stream = io.BytesIO(data)
    if depth is not None and depth <= MAX_DOCUMENTS:
        req = read_lines_request("-", stream, "q", depth)
        assert len(req.documents) == depth
        assert req.documents[0] == "doc 0"
    else:
        with pytest.raises(UserInputError, match=f"more than {MAX_DOCUMENTS} documents.*--depth"):
            read_lines_request("-", stream, "q", depth)
    # it read about as many lines as it kept, never the whole file
    assert stream.tell() < len(data) // 10


def test_docs_of_a_huge_file_are_refused_by_the_cli(cli, fake_gguf, tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("d\n" * 200_000)
    code, _, err = cli("rerank", "-m", str(fake_gguf), "-q", "q", "--docs", str(path))
    assert code == 2 and "more than 1000 documents" in err and "--depth" in err
    code, out, _ = cli("rerank", "-m", str(fake_gguf), "-q", "q", "--docs", str(path), "--depth", "5",
                       "--format", "trec")
    assert code == 0 and len(out.splitlines()) == 5


# -- F20: strings that are not valid Unicode, anywhere in a record ----------------------------------------

BAD = st.sampled_from(["\udc00", "t\udc80x", "\ud800", "a\udfff"])
NAMES = st.text(st.characters(codec="utf-8", exclude_characters="\n"), min_size=1, max_size=5)


@st.composite
def records_with_a_bad_string(draw):
    """A valid record with one bad string placed anywhere (a value or a key, at any depth), and
    the field path the message must name."""
    shape = draw(st.sampled_from(["hits", "documents", "candidates"]))
    if shape == "hits":
        record = {"query": "q", "hits": [{"content": "a", "docid": "d0"}, {"content": "b", "docid": "d1"}]}
        anchors = [((), "query"), (("hits", 0), "hits[0]"), (("hits", 1), "hits[1]"), ((), "")]
    elif shape == "documents":
        record = {"query": "q", "documents": ["a", {"text": "b"}]}
        anchors = [((), "query"), (("documents", 1), "documents[1]"), ((), "")]
    else:
        record = {"query": {"text": "q", "qid": "1"},
                  "candidates": [{"docid": "a", "score": 1.0, "doc": {"contents": "x"}},
                                 {"docid": "b", "score": 0.5, "doc": {"contents": "y"}}]}
        anchors = [(("query",), "query"), (("candidates", 0, "doc"), "candidates[0].doc"),
                   (("candidates", 1), "candidates[1]"), ((), "")]
    steps, path = draw(st.sampled_from(anchors))
    if path == "query" and steps == ():  # replace the query text itself
        record["query"] = draw(BAD)
        return record, "query"
    target = record
    for s in steps:
        target = target[s]
    # a new field under the anchor, maybe nested in lists and objects
    name = draw(NAMES.filter(lambda k: k not in target and "." not in k and "[" not in k))
    depth = draw(st.lists(st.one_of(st.just("list"), NAMES.filter(lambda k: "." not in k and "[" not in k)),
                          max_size=4))
    in_key = draw(st.booleans())
    bad = draw(BAD)
    full = f"{path}.{name}" if path else name
    leaf_path = full
    for d in depth:
        leaf_path += "[0]" if d == "list" else f".{d}"
    if in_key:
        value = {bad: "v"}
    else:
        value = bad
    for d in reversed(depth):
        value = [value] if d == "list" else {d: value}
    target[name] = value
    return record, leaf_path


@FIXTURES
@given(case=records_with_a_bad_string(), as_array=st.booleans())
def test_a_bad_string_anywhere_in_a_record_is_refused_with_its_path(case, as_array):
    from dear_local.inputs import jsonl_requests

    record, path = case
    good = {"query": "q", "documents": ["a", "b"], "qid": "first"}
    if as_array:
        text = json.dumps([good, record])
        where = "in.json record 2"
    else:
        text = json.dumps(good) + "\n\n" + json.dumps(record) + "\n"
        where = "in.json line 3"
    with pytest.raises(UserInputError) as info:
        jsonl_requests(text, "in.json")
    message = str(info.value)
    assert message.startswith(where) and "not valid text" in message
    assert path in message or "the key of the field" in message, message


def test_rank_llm_output_of_a_bad_url_is_refused_before_writing(cli, fake_gguf, tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"query": {"text": "q", "qid": "1"}, "candidates": [
        {"docid": "a", "score": 1, "doc": {"contents": "x", "url": "t\udc00"}},
        {"docid": "b", "score": 0, "doc": {"contents": "y"}}]}) + "\n")
    out = tmp_path / "o.jsonl"
    for fmt in ("rank_llm", "json", "table"):
        code, _, err = cli("rerank", "-m", str(fake_gguf), "--jsonl", str(path), "--format", fmt, "--out", str(out))
        assert code == 2 and "candidates[0].doc.url" in err and "unexpected" not in err
        assert not out.exists()


# -- F24: answers with no usable id ---------------------------------------------------------------------


@pytest.mark.parametrize("script", [lambda n: [n + 6, n + 5, n + 4], lambda n: [-1] * n, lambda n: [0]])
def test_answers_without_usable_ids_warn_fail_strict_and_reach_meta_warnings(script, cli, fake_gguf, monkeypatch):
    pytest.importorskip("fastapi")
    from fake_backend import FakeBackend, fake_open_backend
    from fastapi.testclient import TestClient

    from dear_local.backends import factory
    from dear_local import Profile, Reranker
    from dear_local.server import ServerSettings, create_app

    monkeypatch.setattr(factory, "open_backend", fake_open_backend(script))
    code, out, err = cli("rerank", "-m", str(fake_gguf), "-q", "q", "--format", "trec", stdin="a\nb\nc\n")
    assert code == 0 and "gave no ranking" in err
    code, out, err = cli("rerank", "-m", str(fake_gguf), "-q", "q", "--strict", stdin="a\nb\nc\n")
    assert code == 1 and "1 of 1 windows" in err

    reranker = Reranker("fake", profile=Profile(template="rankgpt-chat"), backend=FakeBackend(script=script))
    with TestClient(create_app(ServerSettings(model="fake.gguf", timeout=30.0), reranker=reranker)) as c:
        meta = c.post("/v1/rerank", json={"query": "q", "documents": ["a", "b", "c"]}).json()["meta"]
    (warning,) = meta["warnings"]
    assert "1 of 1 windows (100%) gave no ranking" in warning


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 20), base=st.sampled_from([0, 1]), data=st.data())
def test_a_window_is_unparsed_exactly_when_its_answer_gave_too_few_ids(n, base, data):
    from dear_local.answer_check import ParseTally
    from dear_local.contract import parse_ranking

    named = data.draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n))
    junk = data.draw(st.lists(st.sampled_from([n + base, n + base + 7, base - 1 if base else 99]), max_size=4))
    text = " > ".join(f"[{i + base}]" for i in data.draw(st.permutations(named + junk)))
    parsed = parse_ranking(text, n, base)
    tally = ParseTally()
    tally.add([(parsed.status, parsed.model_ids, n)])
    assert tally.unparsed == (parsed.status == "wrong_format" or parsed.model_ids < min(2, n))


# -- F25: non-finite scores -------------------------------------------------------------------------------


@given(score=st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "-Infinity", "1e999", "-1e400", "+nan"]),
       line=st.integers(1, 5))
@settings(max_examples=30, deadline=None)
def test_non_finite_run_scores_are_refused_with_the_line(tmp_path_factory, score, line):
    from dear_local.formats.trec import read_run

    path = tmp_path_factory.mktemp("run") / "r.trec"
    rows = [f"q1 Q0 d{i} {i + 1} {10 - i} bm25" for i in range(5)]
    rows[line - 1] = f"q1 Q0 d{line - 1} {line} {score} bm25"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(UserInputError, match=f"line {line}: the score .* finite"):
        read_run(path)


# -- F28: hostile JSON ------------------------------------------------------------------------------------


@given(depth=st.integers(5_000, 200_000), kind=st.sampled_from(["[", '{"a":']),
       digits=st.integers(4_301, 20_000))
@settings(max_examples=10, deadline=None)
def test_deep_or_huge_json_is_one_line_in_every_reader(tmp_path_factory, depth, kind, digits):
    from dear_local.formats.collection import read_corpus
    from dear_local.inputs import jsonl_requests

    close = "]" if kind == "[" else "}"
    deep = kind * depth + "1" + close * depth
    huge = json.dumps({"query": "q", "documents": ["a"]})[:-1] + ', "qid": ' + "7" * digits + "}"
    for text, what in ((deep + "\n", "nested too deeply"), (huge + "\n", "number too long")):
        with pytest.raises(UserInputError, match=what):
            jsonl_requests(text, "in.jsonl")
        with pytest.raises(UserInputError, match=what):
            jsonl_requests("[" + text + "]", "in.json")
        corpus = tmp_path_factory.mktemp("c") / "corpus.jsonl"
        corpus.write_text(text + '{"id": "d", "contents": "x"}\n')
        with pytest.raises(UserInputError, match=f"line 1 .*{what}"):
            read_corpus(corpus, ["d"])


def test_a_deep_or_huge_journal_line_is_a_damaged_line(tmp_path):
    from dear_local.formats.resumable import ResumableOutput

    out = tmp_path / "o.trec"
    key = {"format": "trec"}
    sink = ResumableOutput(out, key, qids=["a", "b"])
    sink.write("a", ["a Q0 d 1 1 x"])
    sink.close()
    journal = tmp_path / "o.trec.partial.journal"
    with open(journal, "ab") as f:
        f.write(b"[" * 100_000 + b"]" * 100_000 + b"\n")
    sink = ResumableOutput(out, key, qids=["a", "b"])
    assert sink.done == ["a"]
    sink.close()
    journal.write_bytes(b"[" * 100_000 + b"\n" + b"[\"b\", " + b"9" * 5000 + b", 1]\n")
    sink = ResumableOutput(out, key, qids=["a", "b"])
    assert sink.done == []  # a first line that cannot be read: nothing done yet
    sink.close()


@pytest.mark.parametrize("body,what", [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"query": "q", "documents": ["a"], "top_n": ' + b"9" * 5000 + b"}", "number too long"),
])
def test_http_bodies_that_python_cannot_read_say_why(body, what):
    pytest.importorskip("fastapi")
    from fake_backend import FakeBackend
    from fastapi.testclient import TestClient

    from dear_local import Profile, Reranker
    from dear_local.server import ServerSettings, create_app

    reranker = Reranker("fake", profile=Profile(template="rankgpt-chat"), backend=FakeBackend())
    app = create_app(ServerSettings(model="fake.gguf", timeout=30.0, max_body_bytes=10_000_000), reranker=reranker)
    with TestClient(app) as c:
        resp = c.post("/v1/rerank", content=body, headers={"content-type": "application/json"})
        assert resp.status_code == 400 and what in resp.json()["message"]
        ok = c.post("/v1/rerank", json={"query": "q", "documents": ["a", "b"]})
        assert ok.status_code == 200


# -- F18, F19, F21: --out and the resume journal ---------------------------------------------------------


def test_two_names_of_one_out_share_one_lock_and_the_link_stays(tmp_path):
    from dear_local.formats.resumable import ResumableOutput, refuse_busy

    target = tmp_path / "c.trec"
    link = tmp_path / "link.trec"
    link.symlink_to(target.name)
    first = ResumableOutput(link, {"format": "trec"}, qids=["a"])
    with pytest.raises(UserInputError, match="another dear-local run"):
        ResumableOutput(target, {"format": "trec"}, qids=["a"])
    with pytest.raises(UserInputError, match="another dear-local run"):
        refuse_busy(target)
    first.write("a", ["a Q0 d 1 1 x"])
    first.finish()
    assert link.is_symlink() and target.read_text() == "a Q0 d 1 1 x\n"


def test_the_resume_key_names_the_model_file_not_its_spelling(tmp_path, fake_gguf):
    from fake_backend import FakeBackend

    from dear_local import Profile, Reranker
    from dear_local.cli.runtime import _run_key
    from dear_local.formats.request import Request

    (tmp_path / "sub").mkdir()
    model = tmp_path / "m-Q4_K_M.gguf"
    model.write_bytes(fake_gguf.read_bytes())
    alias = tmp_path / "alias.gguf"
    alias.symlink_to(model)
    reranker = Reranker("fake", profile=Profile(template="rankgpt-chat"), backend=FakeBackend())
    reqs = [Request(qid="q", query="q", documents=["a"], docids=["0"])]
    keys = [
        _run_key(reranker, spelling, "trec", reqs, None, lora=None, lora_scale=1.0, depth=None,
                 skip_missing=False, served_model=None)
        for spelling in (str(model), str(tmp_path / "sub" / ".." / model.name), str(alias))
    ]
    assert keys[0] == keys[1] == keys[2]


@pytest.mark.parametrize("which", ["journal", "partial"])
@pytest.mark.parametrize("kind", ["fifo", "zero", "link"])
def test_partial_files_that_are_not_regular_files_are_refused(tmp_path, which, kind):
    from dear_local.formats.resumable import ResumableOutput, refuse_busy

    out = tmp_path / "o.trec"
    path = tmp_path / ("o.trec.partial.journal" if which == "journal" else "o.trec.partial")
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "zero":
        path.symlink_to("/dev/zero")
    else:
        (tmp_path / "real").write_bytes(b"")
        path.symlink_to(tmp_path / "real")
    with within(10):
        with pytest.raises(UserInputError, match="not a regular file"):
            refuse_busy(out)
        with pytest.raises(UserInputError, match="not a regular file"):
            ResumableOutput(out, {"format": "trec"}, qids=["a"])
