"""Inference servers that answer badly, slowly or not at all (fast tier: fake servers, no model).

A real HTTP server on 127.0.0.1 speaks llama-server's and the OpenAI-style protocol with the
fake tokenizer of ``fake_backend`` and, per test, answers one route with hostile data. The code
under test is the whole remote path: fleet, protocol readers, backend, decoding and the reranker
(and ``serve`` and the CLI on top). The classes:

- every value a server returns that reaches llama.cpp or numpy (token ids, ``n_ctx``, slots,
  log-probabilities, the JSON shapes around them) is checked where it is read, and a bad one is
  a one-line ``ServerError``; through ``serve`` an HTTP error, and the server keeps serving;
- every request has a total deadline: a server that sends its answer (or its headers) a byte
  at a time cannot stretch a run past ``--request-timeout``, and start-up probes fail fast;
- first-token scores are numbers: missing candidates are an error, probabilities of 0 a tie;
- a password in a ``--server`` URL reaches the server as basic auth and no message or log.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import time
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dear_local import Profile, Reranker
from dear_local.errors import ServerError
from dear_local.remote import fleet as fleet_module
from dear_local.remote.backend import RemoteBackend
from dear_local.remote.fleet import Fleet
from fake_backend import EOS, FakeBackend
from json_http import JsonHandler, start_server, stop_server
from test_remote_protocols import _dead_url

TOK = FakeBackend()
N_VOCAB = TOK.n_vocab
DOCS = ["Paris is the capital of France.", "Bananas are yellow.", "The Eiffel Tower is in Paris."]
ANSWER = "[3] > [2] > [1]"  # rankgpt-chat ids are 1-based
PROPS = {"default_generation_settings": {"n_ctx": 4096}, "total_slots": 1, "build_info": "b-fake",
         "model_path": "fake.gguf"}
PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _one_line_server_error(exc: BaseException) -> str:
    assert isinstance(exc, ServerError), f"{type(exc).__name__}: {exc}"
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text, text
    return text


# -- the fake server ------------------------------------------------------------------------------------


def good_answer(path: str, body):
    """What a working llama-server (or OpenAI-style server) with the fake model answers."""
    if path == "/props":
        return PROPS
    if path == "/tokenize":
        return {"tokens": TOK.tokenize(body["content"], add_bos=False, special=True)}
    if path == "/v1/models":
        return {"data": [{"id": "fake", "owned_by": "vllm", "max_model_len": 4096}]}
    if path == "/completion":
        if "n_probs" in body:  # first-token: the digits, "3" most likely
            return {"completion_probabilities": [{"top_logprobs": [
                {"id": ord(d), "logprob": -0.5 * abs(ord(d) - ord("3"))} for d in "0123456789"]}]}
        if "logit_bias" in body:  # constrained: the first allowed token
            return {"tokens": [body["logit_bias"][0][0]], "stop_type": "limit"}
        return {"tokens": TOK.tokenize(ANSWER, add_bos=False) + [EOS], "stop_type": "eos"}
    if path == "/v1/completions":
        if "logit_bias" in body:
            toks = [int(next(iter(body["logit_bias"])))]
        elif body["logprobs"] > 1:
            return {"choices": [{"logprobs": {"tokens": ["token_id:51"], "top_logprobs": [
                {f"token_id:{ord(d)}": -0.5 * abs(ord(d) - ord("3")) for d in "0123456789"}]}}]}
        else:
            toks = TOK.tokenize(ANSWER, add_bos=False) + [EOS]
        return {"choices": [{"finish_reason": "stop", "logprobs": {"tokens": [f"token_id:{t}" for t in toks]}}]}
    return 404, b"{}"


class _Handler(JsonHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the client reuses its connection as with a real server

    def _answer(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.loads(raw) if raw else None
        self.server.seen.append((self.path, self.headers.get("Authorization")))
        out = self.server.answer(self.path, body)
        if callable(out):  # writes its own answer (slowly)
            out(self)
            return
        status, data = out if isinstance(out, tuple) else (200, out)
        self.send_json(status, data if isinstance(data, bytes) else json.dumps(data).encode())

    do_GET = do_POST = _answer


@pytest.fixture(scope="module")
def fake_server():
    """One fake server for the module; each test sets ``srv.answer(path, body)`` (and ``srv.seen`` resets)."""
    srv = start_server(_Handler)
    srv.answer, srv.seen = good_answer, []
    yield srv
    stop_server(srv)


@pytest.fixture
def server(fake_server):
    fake_server.answer, fake_server.seen = good_answer, []
    yield fake_server
    fake_server.answer = good_answer


def answering(route: str, reply):
    """Answer ``route`` with ``reply`` (a JSON value, or a function of the request body), the rest as a working server."""
    def answer(path, body):
        if path == route:
            return reply(body) if callable(reply) and not isinstance(reply, type) else reply
        return good_answer(path, body)
    return answer


def remote(url: str, protocol: str = "llama-server", timeout: float = 5.0) -> RemoteBackend:
    return RemoteBackend(FakeBackend(), Fleet([url], timeout=timeout, retries=1, backoff=0.01), protocol=protocol)


def reranker(url: str, mode: str, protocol: str = "llama-server", timeout: float = 5.0) -> Reranker:
    return Reranker("fake", profile=Profile(template="rankgpt-chat", decoding=mode),
                    backend=remote(url, protocol, timeout))


@pytest.fixture(scope="module")
def rerankers(fake_server):
    """``rerankers(mode, protocol)``: one reranker per mode and protocol on the module's fake server,
    made once (start-up asks /props and /tokenize) and reused by every example of a property."""
    made: dict = {}

    def get(mode: str, protocol: str = "llama-server") -> Reranker:
        if (mode, protocol) not in made:
            answer, fake_server.answer = fake_server.answer, good_answer
            made[mode, protocol] = reranker(fake_server.url, mode, protocol)
            fake_server.answer = answer
        return made[mode, protocol]

    yield get
    for r in made.values():
        r.close()


def test_the_fake_server_ranks_in_every_mode_and_protocol(server):
    for protocol in ("llama-server", "openai"):
        for mode in ("greedy", "constrained", "first-token"):
            r = reranker(server.url, mode, protocol)
            out = r.rerank("q", DOCS)
            assert sorted(x.index for x in out) == [0, 1, 2]
            if mode != "constrained":
                assert [x.index for x in out][0] == 2, (protocol, mode)
            if mode == "first-token":
                assert all(math.isfinite(x.score) for x in out)
            r.close()


# -- bad values in replies: the classes -------------------------------------------------------------------

JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=True, allow_infinity=True),
                         st.text(max_size=6), st.integers(min_value=-2**70, max_value=2**70))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)), max_leaves=6)


def _not_a_token_id(value) -> bool:
    return not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value < N_VOCAB)


BAD_IDS = st.one_of(st.integers(max_value=-1), st.integers(min_value=N_VOCAB), st.sampled_from([999999999, -5, True, False]),
                    JSON_VALUES.filter(_not_a_token_id))


@PROPERTY
@given(bad=BAD_IDS, at=st.integers(0, 8), mode=st.sampled_from(["greedy", "constrained"]))
def test_a_token_id_outside_the_vocabulary_is_a_one_line_server_error(server, rerankers, bad, at, mode):
    """llama-server's /completion tokens: greedy reads the whole answer, constrained its one token."""
    def reply(body):
        toks = good_answer("/completion", body)["tokens"]
        toks.insert(min(at, len(toks)), bad)
        return {"tokens": toks, "stop_type": "eos"}

    server.answer = answering("/completion", reply)
    with pytest.raises(Exception) as err:
        rerankers(mode).rerank("q", DOCS)
    assert "/completion tokens" in _one_line_server_error(err.value)


@PROPERTY
@given(bad=st.one_of(BAD_IDS.map(lambda v: f"token_id:{v}"), BAD_IDS,
                     st.text(max_size=12).filter(lambda t: not t.startswith("token_id:"))),
       shape=st.sampled_from(["vllm", "llama-server"]), mode=st.sampled_from(["greedy", "constrained"]))
def test_openai_completions_with_bad_token_ids_are_one_line_server_errors(server, rerankers, bad, shape, mode):
    """/v1/completions in vLLM's shape (``token_id:N`` texts) and llama-server's (``{id}`` entries)."""
    if shape == "vllm" and isinstance(bad, str) and bad.startswith("token_id:") and bad[9:].isdigit() \
            and len(bad) < 20 and int(bad[9:]) < N_VOCAB:
        return  # a valid id after all
    if shape == "llama-server" and isinstance(bad, str) and bad.startswith("token_id:"):
        bad = {"id": bad}

    def reply(body):
        if shape == "vllm":
            return {"choices": [{"finish_reason": "stop", "logprobs": {"tokens": ["token_id:91", bad]}}]}
        entry = bad if isinstance(bad, dict) else {"id": bad, "logprob": -0.1}
        return {"choices": [{"finish_reason": "stop", "logprobs": {"content": [{"id": 91, "logprob": 0.0}, entry]}}]}

    server.answer = answering("/v1/completions", reply)
    with pytest.raises(Exception) as err:
        rerankers(mode, "openai").rerank("q", DOCS)
    _one_line_server_error(err.value)


BAD_LOGPROBS = st.one_of(st.sampled_from([math.nan, math.inf, 0.5, True, "-1.0", [], {}]),
                         st.floats(min_value=0.01, allow_nan=False), JSON_VALUES.filter(
                             lambda v: not (v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)
                                                          and not math.isnan(v) and v <= 1e-3))))


@PROPERTY
@given(bad=BAD_LOGPROBS, protocol=st.sampled_from(["llama-server", "openai"]))
def test_first_token_log_probabilities_that_are_not_numbers_at_most_0_are_one_line_server_errors(server, rerankers, bad, protocol):
    """NaN, +inf, positive numbers, strings and bools as a candidate's log-probability."""
    def native(body):
        out = good_answer("/completion", body)
        out["completion_probabilities"][0]["top_logprobs"][1]["logprob"] = bad
        return out

    def openai(body):
        out = good_answer("/v1/completions", body)
        out["choices"][0]["logprobs"]["top_logprobs"][0]["token_id:49"] = bad
        return out

    server.answer = answering(*(("/completion", native) if protocol == "llama-server" else ("/v1/completions", openai)))
    with pytest.raises(Exception) as err:
        rerankers("first-token", protocol).rerank("q", DOCS)
    assert "log-probability" in _one_line_server_error(err.value)


@PROPERTY
@given(body=JSON_VALUES, route=st.sampled_from(["/completion", "/v1/completions"]),
       mode=st.sampled_from(["greedy", "constrained", "first-token"]))
def test_any_json_as_a_completion_is_an_answer_or_a_one_line_server_error(server, rerankers, body, route, mode):
    """Whatever JSON a server sends back, the run ranks or stops with a ServerError; nothing else."""
    server.answer = answering(route, body)
    try:
        out = rerankers(mode, "llama-server" if route == "/completion" else "openai").rerank("q", DOCS)
    except Exception as exc:  # noqa: BLE001 - the point: which exceptions come out
        _one_line_server_error(exc)
    else:
        assert sorted(x.index for x in out) == [0, 1, 2]


BAD_COUNTS = st.one_of(st.integers(max_value=-1), st.integers(min_value=2**31),
                       JSON_VALUES.filter(lambda v: not (v is None or (isinstance(v, int) and not isinstance(v, bool)))))


@PROPERTY
@given(n_ctx=BAD_COUNTS)
def test_props_with_a_bad_n_ctx_is_a_one_line_server_error_at_start(server, n_ctx):
    server.answer = answering("/props", {"default_generation_settings": {"n_ctx": n_ctx}, "total_slots": 1})
    with pytest.raises(Exception) as err:
        remote(server.url)
    assert "n_ctx" in _one_line_server_error(err.value)


@pytest.mark.parametrize("props", [[], "x", 5, None, {"default_generation_settings": []},
                                   {"default_generation_settings": {"n_ctx": "abc"}},
                                   {"default_generation_settings": {}, "total_slots": 0},
                                   {"default_generation_settings": {}, "total_slots": True}])
@pytest.mark.parametrize("protocol", ["auto", "llama-server"])
def test_props_of_the_wrong_shape_is_a_one_line_server_error_at_start(server, props, protocol):
    server.answer = answering("/props", props)
    with pytest.raises(Exception) as err:
        RemoteBackend(FakeBackend(), Fleet([server.url], retries=0), protocol=protocol)
    _one_line_server_error(err.value)


@PROPERTY
@given(tokens=st.one_of(st.lists(BAD_IDS, min_size=1, max_size=3), JSON_VALUES.filter(lambda v: not isinstance(v, list))),
       pieces=st.booleans(), protocol=st.sampled_from(["llama-server", "openai"]))
def test_tokenize_with_tokens_that_are_not_ids_is_a_one_line_server_error_at_start(server, tokens, pieces, protocol):
    if pieces and isinstance(tokens, list):
        tokens = [{"id": t, "piece": "a"} for t in tokens]
    server.answer = answering("/tokenize", {"tokens": tokens})
    with pytest.raises(Exception) as err:
        remote(server.url, protocol)
    assert "/tokenize" in _one_line_server_error(err.value)


@pytest.mark.parametrize("models", [[], {"data": "x"}, {"data": [5]}, {"data": [{"id": "m", "max_model_len": "big"}]},
                                    {"data": [{"id": "m", "max_model_len": -1}]}])
def test_v1_models_of_the_wrong_shape_is_a_one_line_server_error_at_start(server, models):
    server.answer = answering("/v1/models", models)
    with pytest.raises(Exception) as err:
        remote(server.url, "openai")
    _one_line_server_error(err.value)


@pytest.mark.parametrize("raw", [b"not json", b"[" * 100000 + b"]" * 100000, b"\xff\xfe", b"1" * 5000])
def test_a_reply_that_is_not_a_json_object_is_a_one_line_server_error(server, raw):
    server.answer = answering("/completion", raw)
    r = reranker(server.url, "greedy")
    with pytest.raises(Exception) as err:
        r.rerank("q", DOCS)
    _one_line_server_error(err.value)


# -- first-token scores are numbers ---------------------------------------------------------------------------


def test_a_server_whose_top_k_never_holds_the_ids_is_an_error_naming_the_cap(server):
    """Asked for up to the whole vocabulary, it still answers 3 tokens that are not the ids."""
    server.answer = answering("/completion", {"completion_probabilities": [{"top_logprobs": [
        {"id": 200, "logprob": -0.1}, {"id": 201, "logprob": -2.0}, {"id": 202, "logprob": -3.0}]}]})
    r = reranker(server.url, "first-token")
    with pytest.raises(Exception) as err:
        r.rerank("q", DOCS)
    assert "--max-logprobs" in _one_line_server_error(err.value)
    asked = [p for p, _ in server.seen if p == "/completion"]
    assert 1 < len(asked) <= 4  # k grew to the vocabulary, then it stopped


@pytest.mark.parametrize("protocol", ["llama-server", "openai"])
def test_ids_of_probability_0_tie_and_every_score_is_a_number(server, protocol):
    """null and -Infinity are a probability of 0; when every id has it they tie (lower id first), no warnings."""
    def native(body):
        return {"completion_probabilities": [{"top_logprobs": [{"id": ord(d), "logprob": None} for d in "0123456789"]}]}

    def openai(body):
        return {"choices": [{"logprobs": {"tokens": ["token_id:49"],
                                          "top_logprobs": [{f"token_id:{ord(d)}": -math.inf for d in "0123456789"}]}}]}

    server.answer = answering(*(("/completion", native) if protocol == "llama-server" else ("/v1/completions", openai)))
    r = reranker(server.url, "first-token", protocol)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numpy RuntimeWarning fails the test
        out = r.rerank("q", DOCS)
    assert [x.index for x in out] == [0, 1, 2]
    assert all(math.isfinite(x.score) for x in out) and abs(sum(x.score for x in out) - 1) < 1e-9


@PROPERTY
@given(values=st.lists(st.one_of(st.just(-math.inf), st.floats(min_value=-1e308, max_value=0.0)), min_size=2, max_size=6))
def test_branch_scores_from_any_log_probabilities_are_numbers(values):
    """branch_logp and rank_paths on any mix of -inf and finite log-probabilities, however extreme."""
    from dear_local.contract.templates import get_template
    from dear_local.decoding.first_token import branch_logp, rank_paths

    tmpl = get_template("rankgpt-chat")
    children = list(range(len(values)))
    paths = [[c, 999] for c in children]
    logp_at = {(): branch_logp(children, values), **{(c,): {999: 0.0} for c in children}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, probs = rank_paths(tmpl, paths, logp_at)
    assert all(math.isfinite(p) and 0 <= p <= 1 for p in probs) and abs(sum(probs) - 1) < 1e-9


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_local_logits_that_are_not_numbers_are_a_clear_error(bad):
    from dear_local.decoding.first_token import branch_logp
    from dear_local.errors import InvalidModelFileError

    with pytest.raises(InvalidModelFileError, match="another quant"):
        branch_logp([1, 2, 3], [0.5, bad, -1.0])


# -- deadlines ------------------------------------------------------------------------------------------------


def drip_body(handler):
    """A 200 whose JSON body comes one space every 0.2 s (valid JSON whitespace), for up to 20 s."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    _drip(handler, b" ")


def drip_headers(handler):
    """The status line, then one header byte every 0.2 s."""
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    _drip(handler, b"a")


def drip_until_close(handler):
    """A 200 with no Content-Length (the body ends when the connection closes), one space every 0.2 s."""
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
    handler.close_connection = True
    _drip(handler, b" ")


def silent(handler):
    """Reads the request and never answers."""
    time.sleep(20)


def _drip(handler, byte: bytes):
    try:
        for _ in range(100):
            handler.wfile.write(byte)
            time.sleep(0.2)
    except OSError:  # the client hung up: what the deadline should do
        pass


@pytest.mark.parametrize("writer", [drip_body, drip_headers, drip_until_close, silent])
def test_a_request_ends_at_its_total_deadline_whatever_the_server_sends(server, writer):
    server.answer = answering("/completion", lambda body: writer)
    fleet = Fleet([server.url], timeout=1.0, retries=3, backoff=0.01)
    t0 = time.monotonic()
    with pytest.raises(ServerError, match="no complete answer within 1 s") as err:
        fleet.request("POST", "/completion", {})
    assert time.monotonic() - t0 < 2.5
    _one_line_server_error(err.value)
    assert [p for p, _ in server.seen].count("/completion") == 1  # not retried on the server that stalled
    fleet.close()


def test_a_stalled_request_does_not_spoil_the_next_one(server):
    """After the watchdog cut a connection, the same thread's next request goes through."""
    calls = []

    def answer(path, body):
        calls.append(path)
        if path == "/completion" and len(calls) == 1:
            return drip_body
        return good_answer(path, body)

    server.answer = answer
    fleet = Fleet([server.url], timeout=1.0, retries=0)
    with pytest.raises(ServerError):
        fleet.request("POST", "/completion", {"prompt": [1]})
    time.sleep(1.1)  # the server's cool-down
    assert fleet.request("POST", "/completion", {"prompt": [1]})["stop_type"] == "eos"
    fleet.close()


def test_start_up_fails_fast_on_a_server_that_never_answers(server, monkeypatch):
    """--request-timeout 120, a /props that never comes: the probe gives up after PROBE_TIMEOUT, once."""
    monkeypatch.setattr(fleet_module, "PROBE_TIMEOUT", 1.0)
    server.answer = answering("/props", lambda body: silent)
    t0 = time.monotonic()
    with pytest.raises(ServerError, match="does not answer") as err:
        RemoteBackend(FakeBackend(), Fleet([server.url], timeout=120.0), protocol="auto")
    assert time.monotonic() - t0 < 2.5
    _one_line_server_error(err.value)
    assert [p for p, _ in server.seen] == ["/props"]


def test_rerank_with_request_timeout_stops_a_drip_fed_run(server, cli, fake_gguf):
    server.answer = answering("/completion", lambda body: drip_body)
    t0 = time.monotonic()
    code, _, err = cli("rerank", "--model", str(fake_gguf), "--query", "q", "--server", server.url,
                       "--request-timeout", "1", "--template", "rankgpt-chat", stdin="a\nb\nc\n")
    assert time.monotonic() - t0 < 5
    assert code == 1 and "no complete answer within 1 s" in err and "Traceback" not in err


# -- serve --server -----------------------------------------------------------------------------------------


def test_serve_answers_a_bad_upstream_reply_with_an_error_and_keeps_serving(server, caplog):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from dear_local.server import ServerSettings, create_app

    r = reranker(server.url, "greedy")
    settings = ServerSettings(model="fake.gguf", max_queue=2, timeout=30.0, max_documents=6)
    with TestClient(create_app(settings, reranker=r)) as client:
        for bad in (999999999, -5, True, "7", 1.5):
            server.answer = answering("/completion", {"tokens": [91, bad], "stop_type": "eos"})
            resp = client.post("/v1/rerank", json={"query": "q", "documents": DOCS})
            assert 500 < resp.status_code < 600, resp.text
        server.answer = good_answer
        resp = client.post("/v1/rerank", json={"query": "q", "documents": DOCS})
        assert resp.status_code == 200 and [x["index"] for x in resp.json()["results"]] == [2, 1, 0]


# -- credentials in --server URLs ---------------------------------------------------------------------------


def test_a_password_in_a_server_url_is_sent_as_basic_auth_and_never_shown(server, caplog):
    caplog.set_level(logging.DEBUG)
    port = server.server_address[1]
    url = f"http://admin:hunter2@127.0.0.1:{port}"
    r = reranker(url, "greedy")
    assert [x.index for x in r.rerank("q", DOCS)] == [2, 1, 0]
    assert {auth for _, auth in server.seen} == {"Basic " + base64.b64encode(b"admin:hunter2").decode()}
    # every message about it: a refusal, a bad reply, a server that is down
    server.answer = answering("/completion", (400, b'{"error": "no"}'))
    with pytest.raises(ServerError) as refused:
        r.rerank("q", DOCS)
    server.answer = answering("/completion", {"tokens": [-1]})
    with pytest.raises(ServerError) as bad_reply:
        r.rerank("q", DOCS)
    dead = _dead_url().replace("http://", "http://admin:hunter2@")
    with pytest.raises(ServerError) as down:
        remote(dead)
    with pytest.raises(ServerError) as not_http:
        Fleet(["ftp://admin:hunter2@host"])
    fleet = Fleet([dead], retries=0)
    with pytest.raises(ServerError) as all_down:
        fleet.request("POST", "/completion", {})
    shown = [str(e.value) for e in (refused, bad_reply, down, not_http, all_down)] + fleet.stats.errors
    assert all("hunter2" not in s for s in shown), shown
    assert "admin:***@" in str(refused.value) and "admin:***@" in str(down.value)
    assert "hunter2" not in caplog.text


def test_rerank_cli_never_echoes_a_server_password(cli, fake_gguf):
    code, _, err = cli("rerank", "--model", str(fake_gguf), "--query", "q",
                       "--server", _dead_url().replace("http://", "http://admin:hunter2@"), "--server-retries", "0",
                       stdin="a\nb\n")
    assert code == 1 and "hunter2" not in err and "admin:***@" in err
