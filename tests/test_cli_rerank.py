"""The `dear-local rerank` command over the scripted fake backend (fast tier).

The fake answers every window with its ids in reverse order, so each test knows the
exact ranking the CLI must print; the real stand-in's runs are in test_cli.py.
"""

from __future__ import annotations

import json

DOCS = "Paris is the capital of France.\nBananas are yellow.\nThe Eiffel Tower is in Paris.\n"


def test_rerank_prints_the_models_order_as_a_table(cli, fake_gguf):
    code, out, err = cli("rerank", "-m", str(fake_gguf), "-q", "capital of France", stdin=DOCS)
    assert code == 0, err
    rows = [line.split(None, 3) for line in out.splitlines()[2:] if line.strip()]
    assert [(r[0], r[1]) for r in rows] == [("1", "2"), ("2", "1"), ("3", "0")]
    assert "[card/greedy; parse: ok]" in out


def test_rerank_json_has_results_windows_and_the_profile(cli, fake_gguf):
    code, out, err = cli("rerank", "-m", str(fake_gguf), "-q", "capital", "--format", "json",
                         "--template", "rankgpt-chat", "--decoding", "constrained", stdin=DOCS)
    assert code == 0, err
    (record,) = [json.loads(line) for line in out.splitlines()]
    assert [r["docid"] for r in record["results"]] == ["2", "1", "0"]
    assert [r["rank"] for r in record["results"]] == [0, 1, 2]
    assert record["profile"]["template"] == "rankgpt-chat" and record["profile"]["decoding"] == "constrained"
    (window,) = record["windows"]
    assert window["raw_text"] == "[3] > [2] > [1]" and window["status"] == "ok"


def test_rerank_trec_with_top_n_and_sliding_windows(cli, fake_gguf, tmp_path):
    docs = tmp_path / "docs.txt"
    docs.write_text("".join(f"passage {i}\n" for i in range(7)), encoding="utf-8")
    code, out, err = cli("rerank", "-m", str(fake_gguf), "-q", "q", "--docs", str(docs), "--window", "4",
                         "--stride", "2", "--format", "trec", "--top-n", "3")
    assert code == 0, err
    lines = [line.split() for line in out.splitlines()]
    # windows [3:7], [1:5], [0:3], each reversing what it holds: 0123456 -> 0126543 -> 0562143 -> 6502143
    assert [line[2] for line in lines] == ["6", "5", "0"]
    assert [line[3] for line in lines] == ["1", "2", "3"]


def test_rerank_jsonl_ranks_every_record(cli, fake_gguf, tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(
        json.dumps({"query": "a", "hits": [{"content": "x", "docid": "d1"}, {"content": "y", "docid": "d2"}]}) + "\n"
        + json.dumps({"query": "b", "hits": [{"content": c, "docid": c} for c in "pqr"]}) + "\n",
        encoding="utf-8",
    )
    code, out, err = cli("rerank", "-m", str(fake_gguf), "--jsonl", str(path), "--format", "trec")
    assert code == 0, err
    assert [line.split()[2] for line in out.splitlines()] == ["d2", "d1", "r", "q", "p"]


def test_rerank_out_is_written_whole_and_never_overwritten_without_force(cli, fake_gguf, tmp_path):
    out_file = tmp_path / "run.trec"
    args = ("rerank", "-m", str(fake_gguf), "-q", "q", "--format", "trec", "--out", str(out_file))
    code, out, err = cli(*args, stdin=DOCS)
    assert code == 0 and out == "", err
    first = out_file.read_text()
    assert len(first.splitlines()) == 3 and not list(tmp_path.glob("*.partial"))
    code, _, err = cli(*args, stdin=DOCS)
    assert code == 2 and "--force" in err and out_file.read_text() == first
    code, _, err = cli(*args, "--force", stdin="one\ntwo\n")
    assert code == 0 and len(out_file.read_text().splitlines()) == 2


def test_a_long_document_is_cut_and_reported(cli, fake_gguf):
    code, out, err = cli("rerank", "-m", str(fake_gguf), "-q", "q", "--format", "json",
                         stdin="short\n" + "x" * 5000 + "\n")
    assert code == 0, err
    record = json.loads(out)
    assert {r["docid"]: r["truncated"] for r in record["results"]} == {"0": False, "1": True}
    assert err.startswith("warning: query ") and "(docid 1)" in err and len(err.splitlines()) == 1


def test_bad_input_is_one_line_and_exit_2_before_loading(cli, fake_gguf, tmp_path):
    cases = [
        (("-q", "  "), DOCS, "the query is empty"),
        (("-q", "q"), "", "has no documents"),
        (("-q", "q", "--docs", str(tmp_path / "missing.txt")), "", "missing.txt"),
        (("-q", "q", "--docs", str(fake_gguf), "--jsonl", str(fake_gguf)), "", "not --docs and --jsonl"),
    ]
    for args, stdin, needle in cases:
        code, out, err = cli("rerank", "-m", str(fake_gguf), *args, stdin=stdin)
        assert code == 2, (args, err)
        assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (args, err)


def test_an_unwritable_out_is_refused_before_the_model_loads(cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, out, err = cli("rerank", "-m", str(tmp_path / "missing.gguf"), "-q", "q", "--out", str(blocker / "run.trec"),
                         stdin=DOCS)
    assert code == 2 and err.startswith(f"error: cannot write {blocker / 'run.trec'}") and "--out" in err, err
    assert len(err.strip().splitlines()) == 1
