"""The `dear-local` command, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def run(*args, stdin: bytes | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "dear_local", *args],
        input=stdin,
        capture_output=True,
        env=full_env,
        timeout=1800,
    )


@pytest.fixture
def two_queries_jsonl(tmp_path, noveleval_first3):
    """The first two NovelEval queries with their first 8 passages (the Python API tests rank all 20 of three)."""
    path = tmp_path / "q.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i, (q, passages) in enumerate(noveleval_first3[:2]):
            hits = [{"content": p, "docid": f"{i}-{j}", "qid": str(i)} for j, p in enumerate(passages[:8])]
            f.write(json.dumps({"query": q, "hits": hits}) + "\n")
    return path


def test_rerank_by_manifest_name_prints_valid_rankings_for_noveleval_queries(standin_gguf, two_queries_jsonl):
    home = standin_gguf.parents[2]  # the test cache's DEAR_LOCAL_HOME
    proc = run("rerank", "--model", "smollm2-135m-instruct", "--jsonl", str(two_queries_jsonl), "--format", "json",
               env={"DEAR_LOCAL_HOME": str(home)})
    assert proc.returncode == 0, proc.stderr.decode()
    records = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert [r["qid"] for r in records] == ["0", "1"]
    for i, r in enumerate(records):
        assert sorted(x["docid"] for x in r["results"]) == sorted(f"{i}-{j}" for j in range(8))
        assert r["profile"]["template"] == "rankgpt-chat"
        assert r["windows"][0]["status"] in ("ok", "wrong_format", "repetition", "missing_documents")


def test_rerank_reads_stdin_and_prints_trec(standin_gguf):
    proc = run("rerank", "-m", str(standin_gguf), "--template", "rankgpt-chat", "-q", "capital of France",
               "--format", "trec", "--top-n", "2", stdin=b"Paris is the capital of France.\nBananas are yellow.\nThe Eiffel Tower.\n")
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == 2 and lines[0].split()[:2] == ["q0", "Q0"] and lines[0].split()[3] == "1"


def test_templates_lists_both_formats():
    proc = run("templates")
    assert proc.returncode == 0
    out = proc.stdout.decode()
    assert "card" in out and "rankgpt-chat" in out


def test_models_lists_manifests():
    proc = run("models")
    assert proc.returncode == 0
    assert "dear-8b-listwise" in proc.stdout.decode() and "smollm2-135m-instruct" in proc.stdout.decode()


@pytest.mark.parametrize(
    "args,stdin,needle",
    [
        (["rerank", "-m", "MODEL", "-q", "", "--docs", "DOCS"], None, "query is empty"),
        (["rerank", "-m", "MODEL", "-q", "x", "--docs", "EMPTY"], None, "no documents"),
        (["rerank", "-m", "MODEL", "-q", "x"], b"caf\xe9\n", "not valid UTF-8"),
        (["rerank", "-m", "/nope/missing.gguf", "-q", "x", "--docs", "DOCS"], None, "does not exist"),
        (["rerank", "-m", "NOTGGUF", "-q", "x", "--docs", "DOCS"], None, "not a GGUF"),
        (["rerank", "-m", "MODEL", "-q", "x", "--docs", "DOCS", "--template", "nope"], None, "unknown template"),
        (["rerank", "-m", "smollm2-135m-instruct:Q9_Z", "-q", "x", "--docs", "DOCS"], None, "unknown quant"),
        (["rerank", "-m", "no-such-model", "-q", "x", "--docs", "DOCS"], None, "unknown model"),
        (["rerank", "-m", "dear-8b-listwise", "-q", "x", "--docs", "DOCS"], None, "dear-local build"),
        (["rerank", "-m", "MODEL", "-q", "x", "--docs", "DOCS", "--decoding", "beam"], None, "decoding mode"),
    ],
)
def test_bad_input_gets_one_line_error_and_exit_2(args, stdin, needle, standin_gguf, tmp_path):
    docs = tmp_path / "docs.txt"
    docs.write_text("a\nb\n")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    notgguf = tmp_path / "x.gguf"
    notgguf.write_text("hello")
    subs = {"MODEL": str(standin_gguf), "DOCS": str(docs), "EMPTY": str(empty), "NOTGGUF": str(notgguf)}
    proc = run(*[subs.get(a, a) for a in args], stdin=stdin)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert needle in err
    assert "Traceback" not in err
    assert err.strip().count("\n") == 0, err


def test_debug_mode_shows_the_traceback(tmp_path):
    proc = run("rerank", "-m", str(tmp_path / "none.gguf"), "-q", "x", env={"DEAR_LOCAL_DEBUG": "1"}, stdin=b"a\n")
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr.decode()


def test_pull_offline_gives_a_clear_error():
    proc = run("pull", "smollm2-135m-instruct", env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2
    assert "offline" in proc.stderr.decode() and "Traceback" not in proc.stderr.decode()
    proc = run("pull", "dear-8b-listwise", env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and "offline" in proc.stderr.decode()


@pytest.mark.parametrize(
    "args, message",
    [
        (["rerank", "--mode", "x", "-q", "a"], "No such option: --mode"),
        (["rerank", "-q", "a"], "Missing option '--model'"),
        (["bogus"], "No such command 'bogus'"),
        (["rerank", "-m", "x.gguf", "-q", "a", "--window", "abc"], "Invalid value for '--window'"),
        (["serve", "--model", "x.gguf", "--port", "eighty"], "Invalid value for '--port'"),
        (["check", "--reference", "r.jsonl", "--out", "o", "a.gguf", "--nope"], "No such option: --nope"),
    ],
)
def test_usage_errors_are_one_line_naming_the_help_and_exit_2(args, message):
    proc = run(*args)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    prog = "python -m dear_local"  # how run() starts it; the console script says dear-local
    command = prog if args[0] == "bogus" else f"{prog} {args[0]}"
    assert err.rstrip().endswith(f"(see '{command} --help')"), err
    assert "unexpected" not in err and "Traceback" not in err
