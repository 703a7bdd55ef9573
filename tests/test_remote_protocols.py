"""Server protocols and the fleet without a model (fast tier).

- Request bodies and response readers against the shapes llama.cpp's server and vLLM document
  (vLLM: the legacy OpenAI completions logprobs, tokens as ``token_id:N`` with
  ``return_tokens_as_token_ids``; llama.cpp: ``completion_probabilities`` and ``content``).
- The fleet's retries, failover and all-down error against small HTTP servers on loopback
  that answer with scripted statuses (the fleet is the code under test; the peers only
  answer HTTP).
- Resumable output written out of order (several queries in flight) comes out in input order.
"""

from __future__ import annotations

import json
import math

import pytest

from dear_local import Reranker
from dear_local.errors import ServerError
from dear_local.remote.fleet import Fleet
from dear_local.remote.protocols import BIAS, LlamaServer, OpenAI, protocol_for
from json_http import JsonHandler, start_server, stop_server

EOG = frozenset({2})


# -- llama.cpp's native protocol ---------------------------------------------------------------


def test_llama_server_bodies_send_token_ids_greedy_and_cached():
    p = LlamaServer()
    gen = p.generate([1, 5, 9], 40)
    assert gen["prompt"] == [1, 5, 9] and gen["n_predict"] == 40 and gen["temperature"] == 0.0
    assert gen["cache_prompt"] is False and gen["return_tokens"] is True and gen["samplers"] == ["temperature"]
    pick = p.pick([1, 5], [17, 18, 19])
    assert pick["n_predict"] == 1 and pick["logit_bias"] == [[17, BIAS], [18, BIAS], [19, BIAS]]
    top = p.top([1], 64)
    assert top["n_probs"] == 64 and top["post_sampling_probs"] is False


def test_llama_server_answers_are_read_with_ids_and_null_as_minus_infinity():
    p = LlamaServer()
    got = p.read_generate({"content": "[1] > [0]", "tokens": [58, 16, 60, 2], "stop_type": "eos"}, EOG)
    assert got.token_ids == [58, 16, 60] and got.stop_reason == "eog"
    assert p.read_generate({"tokens": [58], "stop_type": "limit"}, EOG).stop_reason == "budget"
    assert p.read_pick({"tokens": [18]}) == 18
    top = p.read_top({"completion_probabilities": [{"id": 16, "logprob": -0.1, "top_logprobs": [
        {"id": 16, "token": "1", "bytes": [49], "logprob": -0.1},
        {"id": 15, "token": "0", "bytes": [48], "logprob": None},
    ]}]})
    assert top == {16: -0.1, 15: -math.inf}
    assert p.read_tokens({"tokens": [1, 2, 3]}) == [1, 2, 3]
    assert p.read_tokens({"tokens": [{"id": 7, "piece": "a"}]}) == [7]
    with pytest.raises(ServerError, match="no token"):
        p.read_pick({"tokens": []})


# -- the OpenAI-compatible protocol (vLLM, SGLang) ------------------------------------------------


def test_openai_bodies_follow_the_completions_api():
    p = OpenAI("dear-8b")
    gen = p.generate([1, 5], 30)
    assert gen == {"prompt": [1, 5], "max_tokens": 30, "temperature": 0.0, "logprobs": 1,
                   "return_tokens_as_token_ids": True, "skip_special_tokens": False, "model": "dear-8b"}
    pick = p.pick([1], [17, 18])
    assert pick["max_tokens"] == 1 and pick["logit_bias"] == {"17": BIAS, "18": BIAS}
    assert p.top([1], 20)["logprobs"] == 20
    path, body = p.tokenize("hi")
    assert path == "/tokenize" and body["prompt"] == "hi" and body["add_special_tokens"] is False
    assert body["model"] == "dear-8b"


VLLM_COMPLETION = {
    "id": "cmpl-1", "object": "text_completion", "model": "dear-8b",
    "choices": [{
        "index": 0, "text": "[1] > [0]", "finish_reason": "stop",
        "logprobs": {
            "text_offset": [0, 1, 2],
            "token_logprobs": [-0.01, -0.2, -0.3],
            "tokens": ["token_id:58", "token_id:16", "token_id:2"],
            "top_logprobs": [{"token_id:58": -0.01, "token_id:12": -4.5}, {"token_id:16": -0.2}, {"token_id:2": -0.3}],
        },
    }],
    "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6},
}


def test_openai_answers_in_vllm_shape_are_read():
    p = OpenAI("dear-8b")
    got = p.read_generate(VLLM_COMPLETION, EOG)
    assert got.token_ids == [58, 16] and got.stop_reason == "eog"
    assert p.read_pick(VLLM_COMPLETION) == 58
    assert p.read_top(VLLM_COMPLETION) == {58: -0.01, 12: -4.5}
    length = json.loads(json.dumps(VLLM_COMPLETION))
    length["choices"][0]["finish_reason"] = "length"
    assert p.read_generate(length, EOG).stop_reason == "budget"


def test_openai_answers_in_llama_server_shape_are_read():
    body = {"choices": [{"text": "[0]", "finish_reason": "length", "logprobs": {"content": [
        {"id": 58, "token": "[", "logprob": -0.5, "top_logprobs": [{"id": 58, "logprob": -0.5}, {"id": 9, "logprob": -1.5}]},
    ]}}]}
    p = OpenAI()
    assert p.read_generate(body, EOG).token_ids == [58]
    assert p.read_top(body) == {58: -0.5, 9: -1.5}


def test_openai_answers_without_token_ids_or_choices_are_clear_errors():
    p = OpenAI()
    no_ids = json.loads(json.dumps(VLLM_COMPLETION))
    no_ids["choices"][0]["logprobs"]["tokens"] = ["[", "1"]
    with pytest.raises(ServerError, match="return_tokens_as_token_ids"):
        p.read_generate(no_ids, EOG)
    with pytest.raises(ServerError, match="no choices"):
        p.read_pick({"error": "bad"})
    with pytest.raises(ServerError, match="no logprobs"):
        p.read_pick({"choices": [{"text": "x"}]})


def test_an_unknown_protocol_names_the_choices():
    with pytest.raises(ServerError, match="llama-server, openai"):
        protocol_for("grpc")


# -- the fleet ----------------------------------------------------------------------------------


class _Scripted(JsonHandler):
    """Answers POST/GET with the next status of the server's script (200 with {"ok": port} after it)."""

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        script = self.server.script
        status = script.pop(0) if script else 200
        self.server.seen += 1
        self.send_json(status, json.dumps({"ok": self.server.server_address[1]}).encode())

    do_GET = do_POST = _answer


@pytest.fixture
def peers():
    started = []

    def start(script):
        srv = start_server(_Scripted)
        srv.script, srv.seen = list(script), 0
        started.append(srv)
        return srv, srv.url

    yield start
    for srv in started:
        stop_server(srv)


def _dead_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_busy_answers_are_retried_with_backoff(peers):
    srv, url = peers([503, 429])
    fleet = Fleet([url], retries=3, backoff=0.01)
    assert fleet.request("POST", "/completion", {}) == {"ok": srv.server_address[1]}
    assert fleet.stats.retries == 2 and srv.seen == 3


def test_a_dead_server_moves_its_work_to_the_other(peers):
    srv, url = peers([])
    fleet = Fleet([_dead_url(), url], retries=1, backoff=0.01)
    for _ in range(3):
        fleet.rebind()
        assert fleet.request("POST", "/completion", {}) == {"ok": srv.server_address[1]}
    assert fleet.stats.failovers >= 1 and srv.seen == 3


def test_with_every_server_down_the_error_names_each(peers):
    a, b = _dead_url(), _dead_url()
    fleet = Fleet([a, b], retries=1, backoff=0.01)
    with pytest.raises(ServerError, match="every server is down") as err:
        fleet.request("POST", "/completion", {})
    assert a in str(err.value) and b in str(err.value) and "run the same command again" in str(err.value)


def test_a_refused_request_is_not_retried(peers):
    srv, url = peers([400])
    fleet = Fleet([url], retries=3, backoff=0.01)
    with pytest.raises(ServerError, match="HTTP 400"):
        fleet.request("POST", "/completion", {})
    assert srv.seen == 1


@pytest.mark.parametrize("url", ["127.0.0.1:8080", "ftp://x", ""])
def test_a_server_that_is_not_an_http_url_is_refused(url):
    with pytest.raises(ServerError, match="http://"):
        Fleet([url])


# -- resumable output with queries finishing out of order ------------------------------------------


def test_queries_written_out_of_order_come_out_in_input_order(tmp_path):
    from dear_local.formats.resumable import ResumableOutput

    out = tmp_path / "run.trec"
    key = {"k": 1}
    sink = ResumableOutput(out, key)
    sink.write("q2", ["q2 line"], 2)
    sink.write("q0", ["q0 line"], 0)
    sink.close()  # killed here: resumed, it knows positions 0 and 2 are done
    sink = ResumableOutput(out, key)
    assert sink.done_positions == {0, 2} and sink.done == ["q2", "q0"]
    sink.write("q1", ["q1 line"], 1)
    sink.finish()
    assert out.read_text() == "q0 line\nq1 line\nq2 line\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.trec"]


# -- the command line ------------------------------------------------------------------------------


def test_rerank_with_a_server_that_is_not_a_url_says_how_to_write_one(cli, fake_gguf):
    code, _, err = cli("rerank", "--model", str(fake_gguf), "--query", "q", "--server", "localhost:8080", stdin="a\nb\n")
    assert code == 1 and "http://" in err and "Traceback" not in err


def test_rerank_with_an_unreachable_server_is_one_clear_line(cli, fake_gguf):
    code, _, err = cli("rerank", "--model", str(fake_gguf), "--query", "q", "--server", _dead_url(),
                       "--server-retries", "0", stdin="a\nb\n")
    assert code == 1 and "does not answer" in err and "Traceback" not in err


@pytest.mark.parametrize("retries", [0, 2])
def test_server_retries_is_how_often_a_dead_server_is_tried_again(fake_gguf, retries):
    """``server_retries=N``: N more attempts, 0.5 s before the first and doubling, before the server is down."""
    import time

    start = time.monotonic()
    with pytest.raises(ServerError, match="does not answer"):
        Reranker(str(fake_gguf), servers=[_dead_url()], server_retries=retries)
    waited = time.monotonic() - start
    assert waited >= 0.5 * (2**retries - 1)  # the backoff's sleeps: none, or 0.5 s + 1 s
    if retries == 0:
        assert waited < 1.5


def test_serve_in_flight_needs_servers():
    from dear_local.errors import UserInputError
    from dear_local.run_options import RunOptions
    from dear_local.server.config import ServerSettings

    with pytest.raises(UserInputError, match="needs --server"):
        ServerSettings(model="m.gguf", in_flight=2)
    assert ServerSettings(model="m.gguf", in_flight=4, run=RunOptions(servers=("http://x:1",))).in_flight == 4


@pytest.mark.parametrize("option, value", [("--in-flight", "0"), ("--protocol", "grpc"), ("--request-timeout", "0")])
def test_bad_server_options_are_usage_errors(cli, fake_gguf, option, value):
    code, _, err = cli("rerank", "--model", str(fake_gguf), "--query", "q", "--server", "http://127.0.0.1:9", option, value)
    assert code == 2 and err.count("\n") == 1 and option in err and "(see 'dear-local rerank --help')" in err, err
