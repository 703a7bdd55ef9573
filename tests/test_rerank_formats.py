"""`dear-local rerank` on every input shape, run as a real subprocess on the stand-in GGUF.

The same DL19 queries go in as RankGPT JSONL, as rank_llm requests, and as a TREC run with
topics and a corpus (TSV with extra documents, and BEIR-style JSONL); every route must give the
same rankings. Kept small (2 queries x 4 passages, one first-token window each) so the model
runs stay short; the tests that run the model are marked slow.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from dear_local.inputs import jsonl_requests

N_QUERIES, N_PASSAGES = 2, 4
PROFILE = ["--window", "4", "--stride", "2", "--decoding", "first-token"]


def dear_local(*args: str, home=None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if home is not None:
        env["DEAR_LOCAL_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "dear_local", *args], capture_output=True, text=True,
                          env=env, timeout=900)


@pytest.fixture(scope="module")
def dl19_slice(shared_dir, tmp_path_factory):
    """The first DL19 BM25 queries and passages, written in every input format."""
    entries = json.loads((shared_dir / "data" / "dl19" / "retrieve_results_dl19.json").read_text(encoding="utf-8"))
    out = tmp_path_factory.mktemp("dl19-formats")
    picked = entries[:N_QUERIES]
    files = {name: out / name for name in ("rankgpt.jsonl", "rank_llm.jsonl", "run.trec", "corpus.tsv", "corpus.jsonl")}
    with open(files["rankgpt.jsonl"], "w", encoding="utf-8") as f:
        for e in picked:
            f.write(json.dumps({"query": e["query"], "hits": e["hits"][:N_PASSAGES]}) + "\n")
    with open(files["rank_llm.jsonl"], "w", encoding="utf-8") as f:
        for e in picked:
            hits = e["hits"][:N_PASSAGES]
            cands = [{"docid": h["docid"], "score": h["score"], "doc": {"segment": h["content"]}} for h in hits]
            f.write(json.dumps({"query": {"text": e["query"], "qid": hits[0]["qid"]}, "candidates": cands}) + "\n")
    # the run holds the top-20; --depth keeps the first N_PASSAGES
    with open(files["run.trec"], "w") as f:
        for e in picked:
            for h in e["hits"][:20]:
                f.write(f"{h['qid']} Q0 {h['docid']} {h['rank']} {h['score']} bm25\n")
    # the corpora hold every passage of the first five queries' top-100: far more than the run needs
    docs = {h["docid"]: h["content"] for e in entries[:5] for h in e["hits"]}
    with open(files["corpus.tsv"], "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        for docid, text in docs.items():
            writer.writerow([docid, text])
    with open(files["corpus.jsonl"], "w", encoding="utf-8") as f:
        for docid, text in docs.items():
            f.write(json.dumps({"_id": docid, "title": "", "text": text, "metadata": {}}) + "\n")
    files["topics"] = shared_dir / "data" / "dl19" / "topics.dl19-passage.txt"
    return files


@pytest.fixture(scope="module")
def home(standin_gguf):
    return standin_gguf.parents[2]  # the test cache's DEAR_LOCAL_HOME, where the stand-in lives


def rerank(home, *args: str) -> subprocess.CompletedProcess:
    return dear_local("rerank", "-m", "smollm2-135m-instruct", *PROFILE, *args, home=home)


@pytest.fixture(scope="module")
def via_jsonl(home, dl19_slice):
    proc = rerank(home, "--jsonl", str(dl19_slice["rankgpt.jsonl"]), "--format", "trec")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_rankgpt_jsonl_route_ranks_every_candidate(via_jsonl, dl19_slice):
    lines = [line.split() for line in via_jsonl.splitlines()]
    assert len(lines) == N_QUERIES * N_PASSAGES
    wanted = [json.loads(line) for line in dl19_slice["rankgpt.jsonl"].read_text().splitlines()]
    for rec in wanted:
        qid = str(rec["hits"][0]["qid"])
        got = [row for row in lines if row[0] == qid]
        assert sorted(row[2] for row in got) == sorted(h["docid"] for h in rec["hits"])
        assert [int(row[3]) for row in got] == list(range(1, N_PASSAGES + 1))


@pytest.mark.parametrize("corpus", ["corpus.tsv", "corpus.jsonl"])
def test_a_run_with_topics_and_a_corpus_ranks_as_the_jsonl_does(home, dl19_slice, via_jsonl, corpus, tmp_path):
    out = tmp_path / "reranked.trec"
    proc = rerank(home, "--run", str(dl19_slice["run.trec"]), "--topics", str(dl19_slice["topics"]),
                  "--corpus", str(dl19_slice[corpus]), "--depth", str(N_PASSAGES), "--format", "trec", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert out.read_text() == via_jsonl
    assert not (tmp_path / "reranked.trec.partial").exists()
    # the output is not overwritten without --force
    again = rerank(home, "--run", str(dl19_slice["run.trec"]), "--topics", str(dl19_slice["topics"]),
                   "--corpus", str(dl19_slice[corpus]), "--format", "trec", "--out", str(out))
    assert again.returncode == 2 and "already exists; pass --force" in again.stderr
    assert out.read_text() == via_jsonl


def test_rank_llm_requests_give_rank_llm_results_that_read_back(home, dl19_slice, via_jsonl, tmp_path):
    out = tmp_path / "result.jsonl"
    proc = rerank(home, "--jsonl", str(dl19_slice["rank_llm.jsonl"]), "--format", "rank_llm", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    requests = [json.loads(line) for line in dl19_slice["rank_llm.jsonl"].read_text().splitlines()]
    results = [json.loads(line) for line in out.read_text().splitlines()]
    trec = [line.split() for line in via_jsonl.splitlines()]
    for req, res in zip(requests, results, strict=True):
        assert res["query"] == req["query"]  # qid keeps its JSON type
        by_docid = {c["docid"]: c for c in req["candidates"]}
        assert sorted(by_docid) == sorted(c["docid"] for c in res["candidates"])
        for c in res["candidates"]:
            assert c["doc"] == by_docid[c["docid"]]["doc"]
        scores = [c["score"] for c in res["candidates"]]
        assert scores == sorted(scores, reverse=True) and scores[0] <= 1.0
        # same order as the RankGPT route
        qid = str(req["query"]["qid"])
        assert [c["docid"] for c in res["candidates"]] == [row[2] for row in trec if row[0] == qid]
    # read back by the same reader, as a request in the new order
    back = jsonl_requests(out.read_text(), str(out))
    assert [r.docids for r in back] == [[c["docid"] for c in res["candidates"]] for res in results]


def test_depth_one_needs_no_model_call_and_every_route_agrees(home, dl19_slice, tmp_path):
    """With one candidate per query nothing is ranked, so the routes can be compared quickly."""
    run_args = ["--run", str(dl19_slice["run.trec"]), "--topics", str(dl19_slice["topics"]),
                "--corpus", str(dl19_slice["corpus.jsonl"])]
    outputs = {}
    for name, args in {"jsonl": ["--jsonl", str(dl19_slice["rankgpt.jsonl"])],
                       "rank_llm": ["--jsonl", str(dl19_slice["rank_llm.jsonl"])], "run": run_args}.items():
        proc = rerank(home, *args, "--depth", "1", "--format", "trec")
        assert proc.returncode == 0, proc.stderr
        outputs[name] = proc.stdout
    assert outputs["jsonl"] == outputs["rank_llm"] == outputs["run"]
    firsts = [json.loads(line)["hits"][0] for line in dl19_slice["rankgpt.jsonl"].read_text().splitlines()]
    assert [line.split()[:4] for line in outputs["run"].splitlines()] == [
        [str(h["qid"]), "Q0", h["docid"], "1"] for h in firsts
    ]


def test_out_is_refused_when_it_exists_unless_forced(home, dl19_slice, tmp_path):
    out = tmp_path / "result.jsonl"
    out.write_text("earlier results\n")
    args = ["--jsonl", str(dl19_slice["rank_llm.jsonl"]), "--depth", "1", "--format", "rank_llm", "--out", str(out)]
    proc = rerank(home, *args)
    assert proc.returncode == 2 and "already exists; pass --force" in proc.stderr
    assert out.read_text() == "earlier results\n"
    proc = rerank(home, *args, "--force")
    assert proc.returncode == 0, proc.stderr
    results = [json.loads(line) for line in out.read_text().splitlines()]
    requests = [json.loads(line) for line in dl19_slice["rank_llm.jsonl"].read_text().splitlines()]
    assert [r["candidates"] for r in results] == [[{**q["candidates"][0], "score": 1.0}] for q in requests]
    assert list(tmp_path.iterdir()) == [out]


def test_a_run_naming_a_document_the_corpus_lacks_gets_a_clear_message(dl19_slice, tmp_path):
    run = tmp_path / "run.trec"
    run.write_text(dl19_slice["run.trec"].read_text() + "264014 Q0 NOT-IN-CORPUS 21 0.1 bm25\n")
    proc = dear_local("rerank", "-m", "smollm2-135m-instruct", "--run", str(run), "--topics", str(dl19_slice["topics"]),
                      "--corpus", str(dl19_slice["corpus.tsv"]), "--format", "trec")
    assert proc.returncode == 2
    assert "1 of the 41 documents the run needs are not in" in proc.stderr and "NOT-IN-CORPUS" in proc.stderr
    assert "--skip-missing" in proc.stderr and proc.stderr.strip().count("\n") == 0


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--run", "RUN"], "--run needs --topics"),
        (["--run", "RUN", "--jsonl", "RUN", "--topics", "T", "--corpus", "C"], "pass one of --docs, --jsonl or --run"),
        (["--corpus", "C", "-q", "x", "--docs", "RUN"], "go with --run"),
        (["--jsonl", "ODD"], "not a request dear-local reads"),
    ],
)
def test_bad_combinations_get_one_line_errors(dl19_slice, tmp_path, args, needle):
    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps({"question": "q", "passages": ["p"]}) + "\n")
    subs = {"RUN": str(dl19_slice["run.trec"]), "T": str(dl19_slice["topics"]), "C": str(dl19_slice["corpus.tsv"]),
            "ODD": str(odd)}
    proc = dear_local("rerank", "-m", "smollm2-135m-instruct", *[subs.get(a, a) for a in args])
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
    assert proc.stderr.strip().count("\n") == 0
