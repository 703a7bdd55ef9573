"""`dear-local evaluate`: trec_eval measures of TREC runs, checked against pytrec_eval directly."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

MEASURES = {"ndcg_cut_1": "nDCG@1", "ndcg_cut_5": "nDCG@5", "ndcg_cut_10": "nDCG@10",
            "map_cut_100": "MAP@100", "recall_100": "Recall@100"}


def run(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    """``dear-local ARGS`` in a fresh interpreter; ``code`` runs first (to hide packages)."""
    prelude = (code or "") + "\nimport sys\nfrom dear_local.cli import main\nsys.argv = ['dear-local', *sys.argv[1:]]\nmain()\n"
    return subprocess.run([sys.executable, "-c", prelude, *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=300)


@pytest.fixture(scope="module")
def dl19(shared_dir, tmp_path_factory):
    """The DL19 BM25 top-100 as a TREC run (scores as stored), its top-20 reversed, and the qrels."""
    data = shared_dir / "data" / "dl19"
    out = tmp_path_factory.mktemp("dl19")
    entries = json.loads((data / "retrieve_results_dl19.json").read_text(encoding="utf-8"))
    bm25, reversed20 = out / "bm25.trec", out / "reversed20.trec"
    with open(bm25, "w") as f, open(reversed20, "w") as g:
        for e in entries:
            for h in e["hits"]:
                f.write(f"{h['qid']} Q0 {h['docid']} {h['rank']} {h['score']} bm25\n")
            top = e["hits"][:20][::-1]
            for r, h in enumerate(top, 1):
                g.write(f"{h['qid']} Q0 {h['docid']} {r} {21 - r} reversed\n")
    return bm25, reversed20, data / "qrels.dl19-passage.txt"


def direct_pytrec_eval(run_path, qrels_path) -> dict[str, dict[str, float]]:
    import pytrec_eval

    qrels, scores = {}, {}
    for line in open(qrels_path):
        q, _, d, g = line.split()
        qrels.setdefault(q, {})[d] = int(g)
    for line in open(run_path):
        q, _, d, _, s, _ = line.split()
        scores.setdefault(q, {})[d] = float(s)
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.1,5,10", "map_cut.100", "recall.100"})
    return ev.evaluate(scores)


def test_bm25_on_dl19_gives_the_published_ndcg10_and_matches_pytrec_eval(dl19):
    bm25, reversed20, qrels = dl19
    proc = run("evaluate", str(bm25), str(reversed20), "--qrels", str(qrels), "--json", "--per-query")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [r["run"] for r in report["runs"]] == [str(bm25), str(reversed20)]
    first = report["runs"][0]
    assert first["queries"] == 43 and first["unjudged"] == [] and first["unretrieved"] == []
    assert round(first["mean"]["nDCG@10"], 4) == 0.5058  # BM25 on DL19, as rank_llm and the DeAR card report
    for r, path in zip(report["runs"], (bm25, reversed20)):
        direct = direct_pytrec_eval(path, qrels)
        assert set(r["per_query"]) == set(direct)
        for key, label in MEASURES.items():
            for q in direct:
                assert r["per_query"][q][label] == pytest.approx(direct[q][key], abs=1e-12)
            assert r["mean"][label] == pytest.approx(sum(v[key] for v in direct.values()) / len(direct), abs=1e-12)
    # the reversed top-20 ranks worse at the top but retrieves fewer documents
    assert report["runs"][1]["mean"]["nDCG@10"] < first["mean"]["nDCG@10"]
    assert report["runs"][1]["mean"]["Recall@100"] < first["mean"]["Recall@100"]


def test_the_table_puts_runs_side_by_side_and_per_query_rows_together(dl19):
    bm25, reversed20, qrels = dl19
    proc = run("evaluate", str(bm25), str(reversed20), "--qrels", str(qrels), "--per-query")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    summary_header = next(i for i, line in enumerate(lines) if line.startswith("run "))
    assert all(h in lines[summary_header] for h in ("nDCG@1", "nDCG@5", "nDCG@10", "MAP@100", "Recall@100"))
    rows = lines[summary_header + 1:]
    assert [row.split()[0] for row in rows] == [str(bm25), str(reversed20)]
    assert rows[0].split()[1] == "43" and rows[0].split()[4] == "0.5058"
    per_query = [line.split() for line in lines[1:summary_header] if line.strip()]
    assert len(per_query) == 2 * 43
    assert all(a[0] == b[0] and a[1] == str(bm25) and b[1] == str(reversed20)
               for a, b in zip(per_query[::2], per_query[1::2]))


def test_queries_left_out_are_reported(dl19, tmp_path):
    bm25, _, qrels = dl19
    partial = tmp_path / "partial.trec"
    lines = bm25.read_text().splitlines()
    kept = [line for line in lines if line.split()[0] != "19335"]
    partial.write_text("\n".join(kept + ["999999 Q0 d1 1 1.0 x"]) + "\n")
    proc = run("evaluate", str(partial), "--qrels", str(qrels), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)["runs"][0]
    assert report["queries"] == 42 and report["unjudged"] == ["999999"] and report["unretrieved"] == ["19335"]
    assert "999999" in proc.stderr and "19335" in proc.stderr and "-c" in proc.stderr


def test_evaluate_works_without_torch_or_transformers(dl19):
    bm25, _, qrels = dl19
    hide = "import sys\nfor m in ('torch', 'transformers'):\n    sys.modules[m] = None\n"
    proc = run("evaluate", str(bm25), "--qrels", str(qrels), code=hide)
    assert proc.returncode == 0, proc.stderr
    assert "0.5058" in proc.stdout


def test_evaluate_without_pytrec_eval_names_the_extra(dl19):
    bm25, _, qrels = dl19
    proc = run("evaluate", str(bm25), "--qrels", str(qrels), code="import sys\nsys.modules['pytrec_eval'] = None\n")
    assert proc.returncode == 2
    assert 'pip install "dear-local[check]"' in proc.stderr and "pytrec-eval-terrier" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "content,needle",
    [
        ("19335 Q0 d1 1\n", "a TREC run line is `qid Q0 docid rank score tag`"),
        ("1 Q0 d1 1 1.0 x\n", "no query of"),
    ],
)
def test_bad_runs_get_a_one_line_error(dl19, tmp_path, content, needle):
    _, _, qrels = dl19
    bad = tmp_path / "bad.trec"
    bad.write_text(content)
    proc = run("evaluate", str(bad), "--qrels", str(qrels))
    assert proc.returncode == 2 and needle in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
