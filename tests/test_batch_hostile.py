"""Batch output under hostile conditions (issue 22: #8 concurrent writers, #9 changed jobs, #10 ids in
run lines, #11 damaged journals, and from #17 --out DIR, full disks, oversized records).

Each test drives the real CLI (in this process, or as separate processes) on the scripted fake backend:
the model is not the point here, the files are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dear_local.errors import DiskFullError, UserInputError
from dear_local.fileio import atomic_path
from dear_local.formats.ids import check_line_id, id_text
from dear_local.formats.resumable import ResumableOutput, refuse_busy, run_key
from dear_local.formats.trec import read_run, run_line
from small_disk import in_small_disk, needs_tmpfs

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
FIXTURE_SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def fits_a_run_line(text: str) -> bool:
    """The rule, written out: non-empty, no whitespace, no control/format/separator character."""
    return bool(text) and not any(
        ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp", "Zs") for ch in text
    )


# -- inputs ---------------------------------------------------------------------------------------


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def hits_records(n_queries: int, n_docs: int = 4, docid_pad: str = "") -> list[dict]:
    return [
        {"qid": f"q{i}", "query": f"query {i}",
         "hits": [{"content": f"passage {i}-{j}", "docid": f"d{i}-{j}{docid_pad}"} for j in range(n_docs)]}
        for i in range(n_queries)
    ]


def first_stage(tmp: Path, n_queries: int = 3, n_docs: int = 3) -> dict[str, Path]:
    """A small TREC run with its topics and corpus."""
    run, topics, corpus = tmp / "bm25.trec", tmp / "topics.tsv", tmp / "corpus.tsv"
    run.write_text("".join(
        f"{q} Q0 d{q}-{j} {j + 1} {10 - j} bm25\n" for q in range(n_queries) for j in range(n_docs)
    ))
    topics.write_text("".join(f"{q}\tquery number {q}\n" for q in range(n_queries)))
    corpus.write_text("".join(f"d{q}-{j}\tpassage {q} {j}\n" for q in range(n_queries) for j in range(n_docs)))
    return {"run": run, "topics": topics, "corpus": corpus}


# -- the CLI as a separate process on the fake backend -------------------------------------------

RUNNER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {tests!r})
    from dear_local.backends import factory
    from fake_backend import fake_open_backend, reverse_order

    HOLD = os.environ.get("FAKE_HOLD")

    def script(n):  # waits while the hold file exists: a run that is busy for as long as the test wants
        while HOLD and os.path.exists(HOLD):
            time.sleep(0.02)
        return reverse_order(n)

    factory.open_backend = fake_open_backend(script)
    from dear_local.cli import main
    sys.argv = ["dear-local", *sys.argv[1:]]
    main()
""")


@pytest.fixture
def runner(tmp_path) -> list[str]:
    """``[python, script]``: the CLI in a fresh process, with the fake backend for every GGUF."""
    script = tmp_path / "run_cli.py"
    script.write_text(RUNNER.format(tests=str(TESTS)))
    return [sys.executable, str(script)]


def proc_env(**extra: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "convert"), env.get("PYTHONPATH", "")])
    env["DEAR_LOCAL_NO_PROGRESS"] = "1"
    env.pop("DEAR_LOCAL_DEBUG", None)
    env.update(extra)
    return env


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def journal_lines(out: Path) -> list[str]:
    journal = out.with_name(out.name + ".partial.journal")
    return journal.read_text().splitlines() if journal.is_file() else []


# -- #8 concurrent writers ------------------------------------------------------------------------


def test_a_second_run_on_the_same_out_is_refused_while_the_first_writes(runner, fake_gguf, tmp_path):
    jsonl = write_jsonl(tmp_path / "q.jsonl", hits_records(4))
    args = [*runner, "rerank", "-m", str(fake_gguf), "--jsonl", str(jsonl), "--format", "trec"]
    whole = subprocess.run(args, capture_output=True, text=True, env=proc_env(), timeout=120)
    assert whole.returncode == 0, whole.stderr
    out, hold = tmp_path / "run.trec", tmp_path / "hold"
    hold.touch()
    first = subprocess.Popen([*args, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=proc_env(FAKE_HOLD=str(hold)))
    try:
        wait_for(lambda: len(journal_lines(out)) >= 1)  # the first run holds the journal, busy on query 1
        for extra in ([], ["--force"]):
            second = subprocess.run([*args, "--out", str(out), *extra], capture_output=True, text=True,
                                    env=proc_env(), timeout=120)
            assert second.returncode == 2, second.stderr
            assert second.stderr.startswith("error: another dear-local run is writing") and second.stderr.count("\n") == 1
    finally:
        hold.unlink()
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert out.read_text() == whole.stdout
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("run.trec")) == ["run.trec"]


def test_runs_started_together_on_one_out_write_each_query_once(runner, fake_gguf, tmp_path):
    jsonl = write_jsonl(tmp_path / "q.jsonl", hits_records(6))
    args = [*runner, "rerank", "-m", str(fake_gguf), "--jsonl", str(jsonl), "--format", "trec"]
    whole = subprocess.run(args, capture_output=True, text=True, env=proc_env(), timeout=120)
    out = tmp_path / "run.trec"
    procs = [subprocess.Popen([*args, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=proc_env()) for _ in range(3)]
    results = [(p.wait(timeout=120), p.communicate()[1]) for p in procs]
    assert any(code == 0 for code, _ in results), results
    for code, err in results:
        assert code == 0 or (code == 2 and ("another dear-local run" in err or "already exists" in err)), err
    assert out.read_text() == whole.stdout  # every query once, in input order
    assert not (tmp_path / "run.trec.partial").exists() and not (tmp_path / "run.trec.partial.journal").exists()


def test_two_outputs_on_one_file_in_one_process_are_refused_too(tmp_path):
    out = tmp_path / "run.trec"
    key = run_key("trec", "m.gguf", {}, ["a"], None)
    first = ResumableOutput(out, key)
    with pytest.raises(UserInputError, match="another dear-local run is writing"):
        ResumableOutput(out, key)
    with pytest.raises(UserInputError, match="another dear-local run is writing"):
        refuse_busy(out)
    first.write("a", ["a Q0 d 1 1 dear-local"])
    first.finish()
    assert out.read_text() == "a Q0 d 1 1 dear-local\n"
    refuse_busy(out)  # nobody holds it now


# -- #9 a resumed job must be the same job -------------------------------------------------------


class Interrupt(KeyboardInterrupt):
    pass


def interrupt_after(monkeypatch, n: int) -> None:
    """Ctrl-C as query ``n + 1`` starts (the first ``n`` are written)."""
    import dear_local.batch as batch

    real, calls = batch._rerank_one, []

    def one(*args, **kwargs):
        calls.append(1)
        if len(calls) > n:
            raise Interrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(batch, "_rerank_one", one)


def change_corpus(files, args):
    files["corpus"].write_text(files["corpus"].read_text().replace("passage 2 0", "passage two zero"))
    return args


def change_topics(files, args):
    files["topics"].write_text(files["topics"].read_text().replace("query number 2", "another query"))
    return args


def change_run(files, args):
    lines = files["run"].read_text().splitlines(keepends=True)
    files["run"].write_text("".join(lines[:-1]))  # query 2 loses its last document
    return args


def touch_model(files, args):
    model = Path(args[args.index("-m") + 1])
    st_ = model.stat()
    os.utime(model, ns=(st_.st_atime_ns, st_.st_mtime_ns + 10**9))
    return args


CHANGES = {
    "--depth": lambda files, args: [*args, "--depth", "2"],
    "--skip-missing": lambda files, args: [*args, "--skip-missing"],
    "--top-n": lambda files, args: [*args, "--top-n", "2"],
    "--template": lambda files, args: [*args, "--template", "rankgpt-chat"],
    "--lora": lambda files, args: [*args, "--lora", str(files["run"])],
    "input": change_corpus,
    "input ": change_topics,
    "input  ": change_run,
    "model file": touch_model,
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_changed_job_is_refused_naming_what_changed_and_force_starts_over(cli, fake_gguf, tmp_path, monkeypatch, change):
    files = first_stage(tmp_path)
    out = tmp_path / "s.trec"
    args = ["rerank", "-m", str(fake_gguf), "--run", str(files["run"]), "--topics", str(files["topics"]),
            "--corpus", str(files["corpus"]), "--format", "trec"]
    with monkeypatch.context() as m:
        interrupt_after(m, 1)
        code, _, err = cli(*args, "--out", str(out))
    assert code == 130 and len(journal_lines(out)) == 2, err  # header + one query
    changed = CHANGES[change](files, list(args))
    code, _, err = cli(*changed, "--out", str(out))
    assert code == 2 and "unfinished run made with a different" in err and change.strip() in err, err
    assert "--force" in err and err.count("\n") == 1
    code, expected, err = cli(*changed)
    assert code == 0, err
    code, _, err = cli(*changed, "--out", str(out), "--force")
    assert code == 0 and "resuming" not in err, err
    assert out.read_text() == expected


def test_the_same_job_resumes_and_default_depth_is_the_same_job_as_depth_100(cli, fake_gguf, tmp_path, monkeypatch):
    files = first_stage(tmp_path)
    out = tmp_path / "s.trec"
    args = ["rerank", "-m", str(fake_gguf), "--run", str(files["run"]), "--topics", str(files["topics"]),
            "--corpus", str(files["corpus"]), "--format", "trec"]
    code, whole, err = cli(*args)
    with monkeypatch.context() as m:
        interrupt_after(m, 1)
        cli(*args, "--out", str(out))
    code, _, err = cli(*args, "--out", str(out), "--depth", "100")
    assert code == 0 and "resuming" in err and "1 of 3" in err, err
    assert out.read_text() == whole


def test_another_job_with_no_query_written_yet_just_starts_over(tmp_path):
    out = tmp_path / "run.trec"
    ResumableOutput(out, run_key("trec", "old.gguf", {}, ["a"], None)).close()  # killed before query 1
    sink = ResumableOutput(out, run_key("trec", "new.gguf", {}, ["a"], None))
    assert sink.done == []
    sink.write("a", ["a Q0 d 1 1 dear-local"])
    assert sink.finish().read_text() == "a Q0 d 1 1 dear-local\n"


# -- #10 ids written to run lines ------------------------------------------------------------------


@given(st.text())
def test_an_id_that_passes_the_check_is_one_field_of_a_run_line(text):
    try:
        check_line_id(text, "the qid")
    except UserInputError as exc:
        assert "the qid" in str(exc) and not fits_a_run_line(text)
        return
    assert fits_a_run_line(text)
    line = run_line(text, text, 1, 1.0)
    assert line.split() == [text, "Q0", text, "1", "1", "dear-local"]
    assert line.split(" ") == line.split() and len(line.splitlines()) == 1


@given(st.text(min_size=1).filter(lambda t: any(ch.isspace() for ch in t)))
def test_any_whitespace_in_an_id_is_refused(text):
    with pytest.raises(UserInputError, match="breaks TREC run lines"):
        check_line_id(text, "the docid")


JSON_IDS = st.one_of(
    st.text(max_size=6), st.integers(-10, 10**12), st.booleans(), st.none(), st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)


@FIXTURE_SETTINGS
@given(qids=st.lists(JSON_IDS, min_size=1, max_size=3), docids=st.lists(JSON_IDS, min_size=1, max_size=3))
def test_jsonl_ids_give_a_valid_run_or_one_error_naming_the_record(cli, fake_gguf, tmp_path_factory, qids, docids):
    tmp = tmp_path_factory.mktemp("ids")
    records = [{"qid": q, "query": f"query {i}", "hits": [{"content": f"p{j}", "docid": d} for j, d in enumerate(docids)]}
               for i, q in enumerate(qids)]
    jsonl = write_jsonl(tmp / "q.jsonl", records)
    out = tmp / "run.trec"
    code, stdout, err = cli("rerank", "-m", str(fake_gguf), "--jsonl", str(jsonl), "--format", "trec", "--out", str(out))

    def as_id(v):
        return v if isinstance(v, str) else str(v)

    valid = all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in [*qids, *docids])
    texts = [as_id(v) for v in qids], [as_id(v) for v in docids]
    valid = valid and len(set(texts[0])) == len(texts[0]) and len(set(texts[1])) == len(texts[1])
    valid = valid and all(fits_a_run_line(t) for t in [*texts[0], *texts[1]])
    if not valid:
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        assert "record" in err
        assert not out.exists() and not (tmp / "run.trec.partial").exists()  # refused before any query ran
        return
    assert code == 0, err
    run = read_run(out)
    assert list(run) == texts[0]
    assert all(sorted(e.docid for e in entries) == sorted(texts[1]) for entries in run.values())


@pytest.mark.parametrize("qid", [{"x": 1}, [1], True, None, 1.5])
def test_a_qid_that_is_not_a_string_or_integer_is_refused_with_its_record(cli, fake_gguf, tmp_path, qid):
    records = hits_records(2)
    records[1]["qid"] = qid
    code, out, err = cli("rerank", "-m", str(fake_gguf), "--jsonl", str(write_jsonl(tmp_path / "q.jsonl", records)))
    assert code == 2 and "record 2" in err and "string or an integer" in err and out == "", err


def test_integer_ids_are_written_as_their_digits(cli, fake_gguf, tmp_path):
    records = [{"qid": 7, "query": "q", "hits": [{"content": "a", "docid": 10}, {"content": "b", "docid": "11"}]}]
    code, out, err = cli("rerank", "-m", str(fake_gguf), "--jsonl", str(write_jsonl(tmp_path / "q.jsonl", records)),
                         "--format", "trec")
    assert code == 0, err
    assert [line.split()[:3] for line in out.splitlines()] == [["7", "Q0", "11"], ["7", "Q0", "10"]]
    assert id_text(7, "x") == "7"


@pytest.mark.parametrize("fmt", ["trec", "json", "rank_llm"])
def test_duplicate_qids_and_docids_are_refused_before_any_query_runs(cli, fake_gguf, tmp_path, fmt):
    dup_qid = hits_records(3)
    dup_qid[2]["qid"] = 0  # record 1's qid is "q0"; the integer 0 is "0"
    dup_qid[1]["qid"] = "0"
    dup_doc = hits_records(2)
    dup_doc[1]["hits"][3]["docid"] = dup_doc[1]["hits"][1]["docid"]
    for records, expected in ((dup_qid, "input records 2 and 3"), (dup_doc, "documents 2 and 4")):
        jsonl = write_jsonl(tmp_path / "q.jsonl", records)
        code, out, err = cli("rerank", "-m", str(fake_gguf), "--jsonl", str(jsonl), "--format", fmt)
        assert code == 2 and expected in err and out == "", err


# -- #11 damaged journals --------------------------------------------------------------------------

QIDS = [f"q{i}" for i in range(5)]
KEY = run_key("trec", "m.gguf", {"template": "card"}, QIDS, None)


def lines_for(qid: str) -> list[str]:
    return [f"{qid} Q0 d{j} {j + 1} {3 - j} dear-local" for j in range(3)]


def finish_run(out: Path) -> str:
    sink = ResumableOutput(out, KEY, qids=QIDS)
    for pos in sorted(set(range(len(QIDS))) - sink.done_positions):
        sink.write(QIDS[pos], lines_for(QIDS[pos]), pos)
    sink.finish()
    return out.read_text()


WHOLE = "".join(line + "\n" for q in QIDS for line in lines_for(q))


@settings(max_examples=150, deadline=None)
@given(done=st.integers(0, len(QIDS)), order=st.permutations(range(len(QIDS))), data=st.data())
def test_any_truncated_or_garbage_journal_resumes_to_the_whole_file(tmp_path_factory, done, order, data):
    out = tmp_path_factory.mktemp("journal") / "run.trec"
    sink = ResumableOutput(out, KEY, qids=QIDS)
    for pos in order[:done]:  # queries finish in any order
        sink.write(QIDS[pos], lines_for(QIDS[pos]), pos)
    sink.close()
    journal = sink.journal.read_bytes()
    cut = data.draw(st.integers(0, len(journal)), label="cut journal at")
    garbage = data.draw(st.binary(max_size=40) | st.sampled_from([b"\n", b"[]\n", b'["q9", 3, 1]\n', b"{}\n",
                                                                 b'["q1", 99999, 1]\n', b"\xff\xfe\n"]),
                        label="garbage")
    sink.journal.write_bytes(journal[:cut] + garbage)
    partial_cut = data.draw(st.none() | st.integers(0, sink.partial.stat().st_size), label="cut partial at")
    if partial_cut is not None:
        with open(sink.partial, "ab") as f:
            f.truncate(partial_cut)
    assert finish_run(out) == WHOLE
    assert sorted(p.name for p in out.parent.iterdir()) == ["run.trec"]


@pytest.mark.parametrize("journal, partial", [(b"", b""), (b"", None), (None, b""), (b"{\"form", b"q0 Q0 d0"),
                                              (b"not json at all\n", b"")])
def test_an_empty_or_unreadable_journal_means_nothing_done_and_the_command_reruns(cli, fake_gguf, tmp_path, journal, partial):
    jsonl = write_jsonl(tmp_path / "q.jsonl", hits_records(3))
    args = ["rerank", "-m", str(fake_gguf), "--jsonl", str(jsonl), "--format", "trec"]
    code, whole, _ = cli(*args)
    out = tmp_path / "run.trec"
    if journal is not None:
        (tmp_path / "run.trec.partial.journal").write_bytes(journal)
    if partial is not None:
        (tmp_path / "run.trec.partial").write_bytes(partial)
    code, _, err = cli(*args, "--out", str(out))
    assert code == 0 and "resuming" not in err, err
    assert out.read_text() == whole
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("run")) == ["run.trec"]


# -- #17 refused before running: --out DIR, oversized records --------------------------------------


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_out_naming_a_directory_is_refused_before_anything_runs(cli, tmp_path, force):
    jsonl = write_jsonl(tmp_path / "q.jsonl", hits_records(2))
    target = tmp_path / "outdir"
    target.mkdir()
    # the model does not exist: the --out check comes first, before the inputs and the model
    code, out, err = cli("rerank", "-m", str(tmp_path / "absent.gguf"), "--jsonl", str(jsonl), "--out", str(target), *force)
    assert code == 2 and "is a directory" in err and "--out" in err and out == "", err
    assert list(target.iterdir()) == []


def test_out_naming_a_device_is_refused(cli, tmp_path):
    jsonl = write_jsonl(tmp_path / "q.jsonl", hits_records(1))
    code, _, err = cli("rerank", "-m", "x.gguf", "--jsonl", str(jsonl), "--out", os.devnull, "--force")
    assert code == 2 and "not a regular file" in err, err


def test_a_record_over_the_document_limit_is_refused_before_any_query_runs(cli, fake_gguf, tmp_path):
    records = hits_records(3)
    records[1]["hits"] = [{"content": f"p{j}", "docid": f"d{j}"} for j in range(1001)]
    jsonl = write_jsonl(tmp_path / "q.jsonl", records)
    out = tmp_path / "run.trec"
    code, stdout, err = cli("rerank", "-m", str(fake_gguf), "--jsonl", str(jsonl), "--format", "trec",
                            "--out", str(out))
    assert code == 2 and stdout == "" and not out.exists(), err
    assert 'input record 2 (query "q1") has 1001 documents' in err and "--depth 1000" in err, err
    code, _, err = cli("rerank", "-m", str(fake_gguf), "--jsonl", str(jsonl), "--format", "trec", "--depth", "1500")
    assert code == 2 and "--depth" in err and "1000" in err  # a depth past the limit is refused as a flag
    code, _, err = cli("rerank", "-m", str(fake_gguf), "--jsonl", str(jsonl), "--format", "trec", "--depth", "1000")
    assert code == 0, err


# -- #17 a full disk: one line naming the disk -----------------------------------------------------


def one_error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "unexpected" not in stderr and "Traceback" not in stderr, stderr
    return errors[0]


@needs_tmpfs
def test_a_disk_that_fills_up_mid_batch_gives_one_line_and_the_rerun_finishes(runner, fake_gguf, tmp_path):
    jsonl = write_jsonl(tmp_path / "q.jsonl", hits_records(30, docid_pad="x" * 200))
    cmd = " ".join([*runner, "rerank", "-m", str(fake_gguf), "--jsonl", str(jsonl), "--format", "trec"])
    whole = subprocess.run(cmd.split(), capture_output=True, text=True, env=proc_env(), timeout=120)
    assert whole.returncode == 0, whole.stderr
    disk, keep = tmp_path / "disk", tmp_path / "keep"
    keep.mkdir()
    script = (f"head -c 8192 /dev/zero > {disk}/filler; "
              f"{cmd} --out {disk}/run.trec 2> {keep}/first.err; echo $? > {keep}/first.rc; "
              f"rm {disk}/filler; {cmd} --out {disk}/run.trec 2> {keep}/second.err; echo $? > {keep}/second.rc; "
              f"cp {disk}/run.trec {keep}/; ls -a {disk} > {keep}/left")
    done = in_small_disk(disk, 36, script, proc_env())
    assert done.returncode == 0, done.stderr
    first = (keep / "first.err").read_text()
    line = one_error_line(first)
    assert (keep / "first.rc").read_text().strip() == "1"
    assert line.startswith(f"error: no space left on the disk mounted at {disk}") and "run.trec" in line, first
    assert (keep / "second.rc").read_text().strip() == "0", (keep / "second.err").read_text()
    assert "resuming" in (keep / "second.err").read_text()
    assert (keep / "run.trec").read_text() == whole.stdout
    assert (keep / "left").read_text().split() == [".", "..", "run.trec"]


@needs_tmpfs
def test_a_full_disk_at_the_start_leaves_no_empty_partial_files(runner, fake_gguf, tmp_path):
    jsonl = write_jsonl(tmp_path / "q.jsonl", hits_records(2))
    cmd = " ".join([*runner, "rerank", "-m", str(fake_gguf), "--jsonl", str(jsonl), "--format", "trec"])
    disk, keep = tmp_path / "disk", tmp_path / "keep"
    keep.mkdir()
    script = (f"head -c 65536 /dev/zero > {disk}/filler 2>/dev/null; "
              f"{cmd} --out {disk}/run.trec 2> {keep}/err; echo $? > {keep}/rc; ls -a {disk} > {keep}/left")
    in_small_disk(disk, 8, script, proc_env())
    err = (keep / "err").read_text()
    assert "no space left" in one_error_line(err) and (keep / "rc").read_text().strip() in ("1", "2"), err
    assert (keep / "left").read_text().split() == [".", "..", "filler"]


def test_a_full_standard_output_gives_one_line(runner, fake_gguf, tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    jsonl = write_jsonl(tmp_path / "q.jsonl", hits_records(3))
    with open("/dev/full", "w") as full:
        done = subprocess.run([*runner, "rerank", "-m", str(fake_gguf), "--jsonl", str(jsonl), "--format", "trec"],
                              stdout=full, stderr=subprocess.PIPE, text=True, env=proc_env(), timeout=120)
    assert done.returncode == 1
    assert "no space left" in one_error_line(done.stderr) and "standard output" in done.stderr, done.stderr


@needs_tmpfs
def test_atomic_writes_on_a_full_disk_raise_disk_full_naming_the_disk(tmp_path):
    disk = tmp_path / "disk"
    code = (f"from dear_local.fileio import write_text_atomic\n"
            f"from dear_local.errors import DiskFullError\n"
            f"try:\n    write_text_atomic({str(disk / 'big.txt')!r}, 'x' * 100000)\n"
            f"except DiskFullError as exc:\n    print('DISKFULL', exc)\n")
    done = in_small_disk(disk, 8, f"{sys.executable} -c \"$CODE\"; ls -a {disk}", proc_env(CODE=code))
    assert f"DISKFULL no space left on the disk mounted at {disk}" in done.stdout, done.stdout + done.stderr
    assert done.stdout.split()[-2:] == [".", ".."]  # nothing half-written left
    assert issubclass(DiskFullError, OSError)
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(tmp_path / "x") as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
