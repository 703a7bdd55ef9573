"""Reading and writing IR data formats: rank_llm records, TREC runs and qrels, topics, corpora.

No model is loaded here; the rerank round trips on the stand-in are in test_rerank_formats.py.
"""

from __future__ import annotations

import csv
import gzip
import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dear_local.errors import UserInputError
from dear_local.formats.collection import read_corpus, read_topics, unquote_field
from dear_local.formats.first_stage import requests_from_run
from dear_local.formats.rank_llm import RankLLMRequest, doc_text, result_record
from dear_local.formats.results import json_line
from dear_local.formats.trec import read_qrels, read_run
from dear_local.inputs import jsonl_requests


def rank_llm_line(qid, text, candidates) -> str:
    return json.dumps({"query": {"text": text, "qid": qid}, "candidates": candidates})


# ---------------------------------------------------------------------------------------------
# Shapes and rank_llm records


def test_rank_llm_requests_are_read_with_rank_llms_text_fields():
    cands = [
        {"docid": "a", "score": 3.0, "doc": {"contents": "from contents"}},
        {"docid": 7, "score": 2.5, "doc": {"text": "body text", "title": "A title"}},
        {"docid": "c", "score": 1.0, "doc": {"segment": "a segment"}},
        {"docid": "d", "score": 0.5, "doc": {"text": "no title", "title": ""}},
    ]
    [req] = jsonl_requests(rank_llm_line(19335, "what is x", cands) + "\n", "rl.jsonl")
    assert isinstance(req, RankLLMRequest)
    assert (req.qid, req.query) == ("19335", "what is x")
    assert req.docids == ["a", "7", "c", "d"]
    assert req.documents == ["from contents", "Title: A title Content: body text", "a segment", "no title"]


def test_a_json_array_of_rank_llm_requests_is_read_too():
    records = [json.loads(rank_llm_line(str(q), f"query {q}", [{"docid": "x", "score": 1, "doc": {"text": "t"}}]))
               for q in range(3)]
    reqs = jsonl_requests(json.dumps(records, indent=2), "rl.json")
    assert [r.qid for r in reqs] == ["0", "1", "2"]


def test_rankgpt_and_documents_shapes_still_read():
    rankgpt = json.dumps({"query": "q", "hits": [{"content": "p0", "docid": "d0", "qid": 5}]})
    documents = json.dumps({"query": "q", "documents": ["p0", {"text": "p1"}]})
    assert jsonl_requests(rankgpt, "a.jsonl")[0].docids == ["d0"]
    assert jsonl_requests(documents, "b.jsonl")[0].documents == ["p0", "p1"]


def test_an_unknown_shape_gets_one_message_listing_every_accepted_shape():
    with pytest.raises(UserInputError) as err:
        jsonl_requests(json.dumps({"question": "q", "passages": ["p"]}), "odd.jsonl")
    msg = str(err.value)
    assert "odd.jsonl record 1" in msg and "\n" not in msg
    for needle in ('"candidates"', '"hits"', '"documents"', "--run"):
        assert needle in msg


def test_one_file_holds_one_shape():
    lines = [
        rank_llm_line("1", "q", [{"docid": "a", "score": 1, "doc": {"text": "t"}}]),
        json.dumps({"query": "q", "hits": [{"content": "p", "docid": "d"}]}),
    ]
    with pytest.raises(UserInputError, match="record 2 has the rankgpt shape but record 1 has the rank_llm shape"):
        jsonl_requests("\n".join(lines), "mixed.jsonl")


@pytest.mark.parametrize(
    "candidate,needle",
    [
        ({"score": 1, "doc": {"text": "t"}}, 'needs a "docid"'),
        ({"docid": "a", "score": "high", "doc": {"text": "t"}}, '"score" must be a number'),
        ({"docid": "a", "score": 1, "doc": "plain text"}, '"doc" must be a JSON object'),
        ({"docid": "a", "score": 1, "doc": {"url": "http://x"}}, "has no passage text"),
        ({"docid": "a", "score": 1, "doc": {"contents": 3}}, '"contents" must be a string'),
    ],
)
def test_bad_rank_llm_candidates_are_named(candidate, needle):
    with pytest.raises(UserInputError, match=needle) as err:
        jsonl_requests(rank_llm_line("1", "q", [candidate]), "rl.jsonl")
    assert "rl.jsonl record 1 candidate 1" in str(err.value)


def test_a_rank_llm_query_needs_text_and_qid():
    with pytest.raises(UserInputError, match='"query" must be an object'):
        jsonl_requests(json.dumps({"query": "plain", "candidates": []}), "rl.jsonl")


def test_a_result_record_reorders_candidates_and_keeps_docs_and_id_types():
    cands = [{"docid": i, "score": 10.0 - i, "doc": {"text": f"p{i}", "url": f"u{i}"}} for i in range(4)]
    [req] = jsonl_requests(rank_llm_line(42, "q", cands), "rl.jsonl")
    result = result_record(req, [2, 0, 3, 1], [1.0, 0.75, 0.5, 0.25])
    assert result["query"] == {"text": "q", "qid": 42}
    assert [c["docid"] for c in result["candidates"]] == [2, 0, 3, 1]
    assert [c["score"] for c in result["candidates"]] == [1.0, 0.75, 0.5, 0.25]
    assert result["candidates"][0]["doc"] == {"text": "p2", "url": "u2"}
    [back] = jsonl_requests(json.dumps(result), "result.jsonl")
    assert back.docids == ["2", "0", "3", "1"] and back.documents == ["p2", "p0", "p3", "p1"]


json_ids = st.one_of(st.text(min_size=1, max_size=8), st.integers(min_value=0, max_value=10**9))
passages = st.text(min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(
    qid=json_ids,
    query=st.text(min_size=1, max_size=30),
    docs=st.lists(st.tuples(json_ids, passages, st.sampled_from(("text", "segment", "contents"))),
                  min_size=1, max_size=6, unique_by=lambda d: str(d[0])),
    data=st.data(),
)
def test_any_permutation_written_as_a_result_reads_back_in_that_order(qid, query, docs, data):
    cands = [{"docid": d, "score": float(len(docs) - j), "doc": {field: text}} for j, (d, text, field) in enumerate(docs)]
    [req] = jsonl_requests(rank_llm_line(qid, query, cands), "rl.jsonl")
    order = data.draw(st.permutations(range(len(docs))))
    scores = [1.0 - k / len(docs) for k in range(len(docs))]
    line = json_line(result_record(req, order, scores))
    [back] = jsonl_requests(line, "result.jsonl")
    assert back.qid == str(qid) and back.query == query
    assert back.docids == [str(docs[i][0]) for i in order]
    assert back.documents == [docs[i][1] for i in order]
    assert [c["score"] for c in json.loads(line)["candidates"]] == scores


def test_result_lines_keep_text_as_utf8_but_escape_line_separators():
    line = json_line({"doc": {"text": "caf\u00e9 a\u2028b\u0085c\u2029"}})
    assert "café" in line and len(line.splitlines()) == 1
    assert json.loads(line) == {"doc": {"text": "caf\u00e9 a\u2028b\u0085c\u2029"}}


def test_doc_text_prefers_rank_llms_field_order():
    assert doc_text({"contents": "c", "text": "t"}, "x") == "t"
    assert doc_text({"body": "b"}, "x") == "b"


# ---------------------------------------------------------------------------------------------
# TREC runs and qrels


def test_a_run_is_ordered_by_score_with_rank_breaking_ties(tmp_path):
    run = tmp_path / "run.trec"
    run.write_text(
        "q1 Q0 d3 3 1.5 bm25\n"
        "q1 Q0 d1 1 2.0 bm25\n"
        "q2 Q0 e1 1 9 bm25\n"
        "q1 Q0 d2 2 1.5 bm25\n"
        "\n"
    )
    parsed = read_run(run)
    assert list(parsed) == ["q1", "q2"]
    assert [e.docid for e in parsed["q1"]] == ["d1", "d2", "d3"]


@pytest.mark.parametrize(
    "text,needle",
    [
        ("q1 Q0 d1 1 2.0\n", "has 5 fields"),
        ("q1 Q0 d1 first 2.0 x\n", "must be numbers"),
        ("q1 Q0 d1 1 2.0 x\nq1 Q0 d1 2 1.0 x\n", "line 2 lists document d1 a second time"),
        ("\n", "holds no run lines"),
    ],
)
def test_bad_runs_are_refused_with_the_line(tmp_path, text, needle):
    run = tmp_path / "run.trec"
    run.write_text(text)
    with pytest.raises(UserInputError, match=needle):
        read_run(run)


def test_qrels_are_read_and_bad_grades_refused(tmp_path):
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("1 0 a 2\n1 0 b 0\n2 Q0 c 1\n")
    assert read_qrels(qrels) == {"1": {"a": 2, "b": 0}, "2": {"c": 1}}
    qrels.write_text("1 0 a high\n")
    with pytest.raises(UserInputError, match="grade 'high' must be an integer"):
        read_qrels(qrels)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        read_run(tmp_path / "nope.trec")


# ---------------------------------------------------------------------------------------------
# Topics and corpora


def test_the_dl19_topics_file_reads(shared_dir):
    topics = read_topics(shared_dir / "data" / "dl19" / "topics.dl19-passage.txt")
    assert len(topics) == 43 and topics["156493"] == "do goldfish grow"


def test_a_csv_quoted_tsv_corpus_reads_like_csv(shared_dir):
    path = shared_dir / "data" / "noveleval" / "corpus.tsv"
    with open(path, encoding="utf-8", newline="") as f:
        expected = {row[0]: row[1] for row in csv.reader(f, delimiter="\t")}
    wanted = ["0-3", "1-0", "20-19"] + [d for d in expected if expected[d].startswith('"')][:5]
    assert read_corpus(path, wanted) == {d: expected[d] for d in wanted}


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="\t\r\n", blacklist_categories=("Cs",)), min_size=1))
def test_tsv_text_written_by_a_csv_writer_reads_back_unchanged(text):
    buf = io.StringIO()
    csv.writer(buf, delimiter="\t", lineterminator="\n").writerow(["d1", text])
    line = buf.getvalue().rstrip("\n")
    assert unquote_field(line.partition("\t")[2]) == text


def test_plain_tsv_text_with_quotes_is_kept_as_is():
    for text in ['He said "hi" twice', '"Quoted" start', 'end "quoted"', '"a" and "b"']:
        assert unquote_field(text) == text


def test_jsonl_corpora_in_pyserini_and_beir_layouts(tmp_path):
    pyserini = tmp_path / "pyserini.jsonl"
    pyserini.write_text("\n".join(json.dumps({"id": f"d{i}", "contents": f"text {i}"}) for i in range(5)) + "\n")
    beir = tmp_path / "beir.jsonl.gz"
    with gzip.open(beir, "wt", encoding="utf-8") as f:
        for i in range(5):
            f.write(json.dumps({"_id": f"d{i}", "title": "T" if i == 1 else "", "text": f"text {i}", "metadata": {}}) + "\n")
    assert read_corpus(pyserini, ["d1", "d3"]) == {"d1": "text 1", "d3": "text 3"}
    assert read_corpus(beir, ["d0", "d1"]) == {"d0": "text 0", "d1": "Title: T Content: text 1"}


def test_corpus_docids_not_wanted_are_not_kept_and_absent_ones_are_left_out(tmp_path):
    corpus = tmp_path / "corpus.tsv"
    corpus.write_text("".join(f"{i}\tpassage {i}\n" for i in range(1000)))
    assert read_corpus(corpus, {"5", "999", "nope"}) == {"5": "passage 5", "999": "passage 999"}


def test_a_corpus_line_without_a_tab_is_named(tmp_path):
    corpus = tmp_path / "corpus.tsv"
    corpus.write_text("1\tfine\n2 no tab here\n")
    with pytest.raises(UserInputError, match="line 2 has no tab"):
        read_corpus(corpus, {"2"})


def test_bad_utf8_in_a_corpus_names_the_line(tmp_path):
    corpus = tmp_path / "corpus.tsv"
    corpus.write_bytes(b"1\tfine\n2\tcaf\xe9\n")
    with pytest.raises(UserInputError, match="line 2 is not valid UTF-8"):
        read_corpus(corpus, {"2"})


# ---------------------------------------------------------------------------------------------
# A first-stage run as requests


@pytest.fixture
def small_collection(tmp_path):
    (tmp_path / "topics.tsv").write_text("q1\tfirst query\nq2\tsecond query\nq3\tunused topic\n")
    (tmp_path / "corpus.tsv").write_text("".join(f"d{i}\tpassage {i}\n" for i in range(10)))
    (tmp_path / "run.trec").write_text(
        "".join(f"q1 Q0 d{i} {i + 1} {10 - i} bm25\n" for i in range(5))
        + "".join(f"q2 Q0 d{9 - i} {i + 1} {10 - i} bm25\n" for i in range(4))
    )
    return tmp_path


def test_a_run_topics_and_corpus_give_requests_cut_to_depth(small_collection):
    p = small_collection
    reqs = requests_from_run(p / "run.trec", p / "topics.tsv", p / "corpus.tsv", depth=3)
    assert [(r.qid, r.query) for r in reqs] == [("q1", "first query"), ("q2", "second query")]
    assert reqs[0].docids == ["d0", "d1", "d2"] and reqs[0].documents == ["passage 0", "passage 1", "passage 2"]
    assert reqs[1].docids == ["d9", "d8", "d7"]


def test_documents_the_corpus_lacks_are_named_or_skipped_with_a_warning(small_collection):
    p = small_collection
    with open(p / "run.trec", "a") as f:
        f.write("q2 Q0 d404 5 1 bm25\nq2 Q0 d405 6 0.5 bm25\n")
    with pytest.raises(UserInputError) as err:
        requests_from_run(p / "run.trec", p / "topics.tsv", p / "corpus.tsv")
    assert "2 of the 11 documents the run needs are not in" in str(err.value)
    assert "d404, d405" in str(err.value) and "--skip-missing" in str(err.value)
    warnings = []
    reqs = requests_from_run(p / "run.trec", p / "topics.tsv", p / "corpus.tsv", skip_missing=True, warn=warnings.append)
    assert reqs[1].docids == ["d9", "d8", "d7", "d6"]
    assert len(warnings) == 1 and "d404" in warnings[0]


def test_queries_the_topics_lack_are_named_or_skipped_with_a_warning(small_collection):
    p = small_collection
    with open(p / "run.trec", "a") as f:
        f.write("q9 Q0 d1 1 1 bm25\n")
    with pytest.raises(UserInputError, match=r"1 of the 3 queries in .* are not in .*topics.tsv \(q9\)"):
        requests_from_run(p / "run.trec", p / "topics.tsv", p / "corpus.tsv")
    warnings = []
    reqs = requests_from_run(p / "run.trec", p / "topics.tsv", p / "corpus.tsv", skip_missing=True, warn=warnings.append)
    assert [r.qid for r in reqs] == ["q1", "q2"] and "q9" in warnings[0]


def test_depth_must_be_positive(small_collection):
    p = small_collection
    with pytest.raises(UserInputError, match="--depth must be at least 1"):
        requests_from_run(p / "run.trec", p / "topics.tsv", p / "corpus.tsv", depth=0)
