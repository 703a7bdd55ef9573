"""Batch output that loses nothing: a run killed at any point resumes with every query exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dear_local.errors import UserInputError
from dear_local.formats.resumable import ResumableOutput, run_key

QIDS = [f"q{i}" for i in range(6)]
KEY = run_key("trec", "m.gguf", {"template": "card"}, QIDS, None)


def lines_for(qid: str) -> list[str]:
    return [f"{qid} Q0 d{j} {j + 1} {3 - j} dear-local" for j in range(3)]


def run_all(out, start_force=False) -> str:
    sink = ResumableOutput(out, KEY, force=start_force)
    for qid in QIDS[len(sink.done):]:
        sink.write(qid, lines_for(qid))
    sink.finish()
    return out.read_text()


@settings(max_examples=60, deadline=None)
@given(done=st.integers(0, len(QIDS)), cut=st.integers(0, 200), journal_cut=st.integers(0, 30))
def test_a_run_killed_anywhere_resumes_to_the_same_file(tmp_path_factory, done, cut, journal_cut):
    tmp = tmp_path_factory.mktemp("resume")
    whole = run_all(tmp / "whole.trec")
    out = tmp / "run.trec"
    sink = ResumableOutput(out, KEY)
    for qid in QIDS[:done]:
        sink.write(qid, lines_for(qid))
    sink.close()
    # the kill: part of the next query's lines reached the file, and maybe half a journal line
    if done < len(QIDS):
        with open(sink.partial, "ab") as f:
            f.write("\n".join(lines_for(QIDS[done])).encode()[:cut])
        line = json.dumps([QIDS[done], 10**6])  # a journal line is only ever whole after its data
        with open(sink.journal, "a", encoding="utf-8") as f:
            f.write(line[: min(journal_cut, len(line) - 1)])
    assert run_all(out) == whole
    assert not sink.partial.exists() and not sink.journal.exists()


def test_a_resume_with_other_options_is_refused_and_force_starts_over(tmp_path):
    out = tmp_path / "run.trec"
    sink = ResumableOutput(out, KEY)
    sink.write("q0", lines_for("q0"))
    sink.close()
    other = {**KEY, "model": "other.gguf"}
    with pytest.raises(UserInputError, match="different model.*--force"):
        ResumableOutput(out, other)
    fresh = ResumableOutput(out, other, force=True)
    assert fresh.done == [] and fresh.partial.stat().st_size == 0
    fresh.close()


def test_a_finished_file_is_not_overwritten_without_force(tmp_path):
    out = tmp_path / "run.trec"
    out.write_text("mine\n")
    with pytest.raises(UserInputError, match="--force"):
        ResumableOutput(out, KEY)
    assert out.read_text() == "mine\n"


def test_the_cli_resumes_an_interrupted_run(cli, fake_gguf, tmp_path, monkeypatch):
    jsonl = tmp_path / "q.jsonl"
    jsonl.write_text("".join(
        json.dumps({"query": f"query {i}", "hits": [{"content": f"p{j}", "docid": f"{i}-{j}"} for j in range(4)]}) + "\n"
        for i in range(5)
    ), encoding="utf-8")
    args = ["rerank", "-m", str(fake_gguf), "--jsonl", str(jsonl), "--format", "trec"]
    code, whole, err = cli(*args)
    assert code == 0, err
    out = tmp_path / "run.trec"
    code, _, err = cli(*args, "--out", str(out))
    assert code == 0 and out.read_text() == whole, err
    out.unlink()
    # Ctrl-C as the third query starts: two queries are written
    import dear_local.batch as batch

    real, calls = batch._rerank_one, []

    def one(*a, **kw):
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    with monkeypatch.context() as m:
        m.setattr(batch, "_rerank_one", one)
        code, _, err = cli(*args, "--out", str(out))
    assert code == 130 and "stopped with 2 queries" in err, err
    # and a kill cut the third query short: half its lines, half a journal line
    partial, journal = tmp_path / "run.trec.partial", tmp_path / "run.trec.partial.journal"
    with open(partial, "a", encoding="utf-8") as f:
        f.write(whole.splitlines(keepends=True)[8][:10])
    with open(journal, "a", encoding="utf-8") as f:
        f.write(json.dumps(["2", 10**4, 2])[:7])
    code, _, err = cli(*args, "--out", str(out))
    assert code == 0, err
    assert "resuming" in err and "2 of 5" in err
    assert out.read_text() == whole and not partial.exists() and not journal.exists()


def test_a_real_run_killed_mid_way_resumes_to_the_uninterrupted_result(standin_gguf, tmp_path, shared_dir):
    records = json.loads((shared_dir / "data" / "dl19" / "retrieve_results_dl19.json").read_text())[:6]
    jsonl = tmp_path / "dl19.jsonl"
    jsonl.write_text("".join(
        json.dumps({"query": r["query"], "hits": [{**h, "content": " ".join(h["content"].split()[:30])} for h in r["hits"][:4]]}) + "\n"
        for r in records
    ), encoding="utf-8")
    cmd = [sys.executable, "-m", "dear_local", "rerank", "-m", str(standin_gguf), "--jsonl", str(jsonl),
           "--format", "trec", "--window", "4", "--stride", "2", "--threads", "2"]
    whole = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "run.trec"
    journal = tmp_path / "run.trec.partial.journal"
    proc = subprocess.Popen([*cmd, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if journal.is_file() and len(journal.read_text().splitlines()) >= 3:  # header + 2 queries
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    assert out.read_text() == whole.stdout
