"""`dear-local serve`: the HTTP API over real HTTP, on the stand-in model.

uvicorn serves the app on an ephemeral loopback port from a background thread;
clients are httpx and the `cohere` SDK pointed at that URL. The model is loaded
once for the module. Queue behaviour (429, 504, dropping work of clients that
left, shutdown) is made deterministic by occupying the one worker with a job
that waits on an event, the same way a long rerank would occupy it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

pytest.importorskip("fastapi")

from dear_local import Profile, Reranker  # noqa: E402
from dear_local.server import ServerSettings, bind_warning, create_app, is_loopback  # noqa: E402
from dear_local.server.queue import QueueClosed, QueueFull, WorkQueue  # noqa: E402
from dear_local.server.runner import background  # noqa: E402

QUERY = "capital of France"
DOCS = [
    "Paris is the capital of France.",
    "Bananas are yellow.",
    "The Eiffel Tower is in Paris.",
    "Cats sleep a lot.",
]
MAX_DOCS = 6
MAX_BODY = 16 * 1024


@pytest.fixture(scope="module")
def reranker(standin_gguf):
    # Constrained decoding: every answer is a whole permutation on every CPU. The stand-in's greedy
    # answer to the canonical request can name one id over and over on some CPUs (AMD EPYC in CI),
    # which is an unparsed window with a warning, and the shape tests here are not about that.
    r = Reranker(str(standin_gguf), profile=Profile(template="rankgpt-chat", decoding="constrained"))
    yield r
    r.close()


@pytest.fixture(scope="module")
def expected(reranker):
    """The library's own rankings of the canonical request, to compare server answers with.

    Two are possible: llama.cpp's logits for a prompt evaluated from scratch differ
    slightly from those of the same prompt re-evaluated over the backend's cached
    prefix, and the stand-in's greedy output can flip between them. Once the
    backend gives one answer for both, this holds a single ranking. Computing them
    also pays the slow first call of the process before any timed request.
    """
    reranker.backend.rewind(0)
    cold = [r.index for r in reranker.rerank(QUERY, DOCS).results]
    warm = [r.index for r in reranker.rerank(QUERY, DOCS).results]
    return Orders([cold, warm])


class Orders(list):
    """The acceptable rankings; ``order in expected`` or ``expected.has_prefix(order)``."""

    def __contains__(self, order) -> bool:
        return any(list(order) == o[: len(order)] for o in self)


def make_settings(standin_gguf, **kw) -> ServerSettings:
    base = dict(model=str(standin_gguf), max_queue=4, timeout=120.0, max_documents=MAX_DOCS, max_body_bytes=MAX_BODY)
    return ServerSettings(**{**base, **kw})


@pytest.fixture(scope="module")
def server(standin_gguf, reranker, expected):
    settings = make_settings(standin_gguf)
    app = create_app(settings, reranker=reranker)
    with background(app, settings) as url:
        yield url, app


@pytest.fixture
def client(server):
    url, _ = server
    with httpx.Client(base_url=url, timeout=120) as c:
        yield c


def serve(standin_gguf, reranker, **kw):
    """A context manager serving a fresh app (own queue, shared model) with some settings changed."""
    settings = make_settings(standin_gguf, **kw)
    app = create_app(settings, reranker=reranker)
    return app, background(app, settings)


def hold_worker(app) -> threading.Event:
    """Occupy the app's single worker until the returned event is set."""
    release = threading.Event()
    queue = app.state.service.queue
    queue.submit(lambda abandoned: release.wait(60))
    wait_for(lambda: queue.busy and queue.pending == 0)
    return release


def wait_for(cond, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def assert_valid_ranking(results, n: int, top_n: int | None = None) -> None:
    indices = [r["index"] for r in results]
    assert len(indices) == (top_n or n) and len(set(indices)) == len(indices)
    assert all(0 <= i < n for i in indices)
    scores = [r["relevance_score"] for r in results]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)


# -- the API shapes -----------------------------------------------------------------------------


def test_v1_rerank_answers_in_the_cohere_v1_shape(client, expected):
    resp = client.post("/v1/rerank", json={
        "model": "rerank-english-v3.0", "query": QUERY, "documents": DOCS, "top_n": 3, "return_documents": True,
    })
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["id"] and body["model"] == "smollm2-135m-instruct-Q4_1"
    assert_valid_ranking(body["results"], len(DOCS), top_n=3)
    assert [r["index"] for r in body["results"]] in expected
    for r in body["results"]:
        assert r["document"]["text"] == DOCS[r["index"]] and r["truncated"] is False
    meta = body["meta"]
    assert meta["api_version"]["version"] == "1" and meta["template"] == "rankgpt-chat"
    assert meta["tokens"]["input_tokens"] > 100 and meta["tokens"]["output_tokens"] > 0
    assert meta["scores"] == "rank" and meta["warnings"] == []
    assert body["usage"]["total_tokens"] == meta["tokens"]["input_tokens"] + meta["tokens"]["output_tokens"]
    # Rank-derived scores: (n - rank) / n.
    assert [r["relevance_score"] for r in body["results"]] == [1.0, 0.75, 0.5]


def test_v1_rerank_takes_jina_text_objects_and_leaves_documents_out_by_default(client, expected):
    resp = client.post("/v1/rerank", json={"model": "jina-reranker-v2", "query": QUERY,
                                           "documents": [{"text": d, "id": i} for i, d in enumerate(DOCS)]})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [r["index"] for r in body["results"]] in expected
    assert all("document" not in r for r in body["results"])
    assert body["usage"]["prompt_tokens"] == body["meta"]["tokens"]["input_tokens"]


def test_v2_rerank_answers_in_the_cohere_v2_shape(client, expected):
    resp = client.post("/v2/rerank", json={"model": "rerank-v3.5", "query": QUERY, "documents": DOCS, "top_n": 2})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [r["index"] for r in body["results"]] in expected
    assert body["meta"]["api_version"]["version"] == "2"
    assert_valid_ranking(body["results"], len(DOCS), top_n=2)


def test_the_cohere_sdk_v2_client_reranks_against_the_local_url(server, expected):
    cohere = pytest.importorskip("cohere")
    url, _ = server
    co = cohere.ClientV2(api_key="unused", base_url=url, timeout=120)
    resp = co.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS, top_n=3)
    assert [r.index for r in resp.results] in expected
    assert resp.results[0].relevance_score == 1.0
    assert resp.meta.tokens.input_tokens > 0


def test_the_cohere_sdk_v1_client_reranks_with_document_objects(server, expected):
    cohere = pytest.importorskip("cohere")
    url, _ = server
    co = cohere.Client(api_key="unused", base_url=url, timeout=120)
    resp = co.rerank(model="rerank-english-v3.0", query=QUERY, documents=[{"text": d} for d in DOCS],
                     return_documents=True)
    assert [r.index for r in resp.results] in expected
    assert [r.document.text for r in resp.results] == [DOCS[r.index] for r in resp.results]


def test_health_models_and_openapi_docs(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["queue"]["max_pending"] == 4
    models = client.get("/v1/models").json()
    assert models["data"][0]["id"] == "smollm2-135m-instruct-Q4_1"
    assert models["data"][0]["template"] == "rankgpt-chat" and models["data"][0]["max_documents"] == MAX_DOCS
    spec = client.get("/openapi.json").json()
    assert {"/v1/rerank", "/v2/rerank", "/health", "/v1/models"} <= set(spec["paths"])
    assert "relevance_score" in spec["info"]["description"]
    assert spec["components"]["schemas"]["RerankRequestV2"]["properties"]["documents"]["maxItems"] == MAX_DOCS
    assert client.get("/docs").status_code == 200


def test_over_long_documents_are_cut_by_the_profile_and_flagged(client):
    # One document per request: a single document needs no model call, and the flag is what is tested.
    over = client.post("/v1/rerank", json={"query": QUERY, "documents": [" ".join(["Paris"] * 301)]})
    assert over.status_code == 200, over.text
    assert over.json()["results"][0]["truncated"] is True  # rankgpt-chat keeps the first 300 words
    (warning,) = over.json()["meta"]["warnings"]
    assert "index 0" in warning and "300 words" in warning
    exact = client.post("/v2/rerank", json={"query": QUERY, "documents": [" ".join(["France"] * 300)]}).json()
    assert exact["results"][0]["truncated"] is False and exact["meta"]["warnings"] == []


def test_with_first_token_decoding_relevance_scores_are_the_models_probabilities(standin_gguf):
    first = Reranker(str(standin_gguf), profile=Profile(template="rankgpt-chat", decoding="first-token"))
    settings = make_settings(standin_gguf)
    try:
        with background(create_app(settings, reranker=first), settings) as url:
            resp = httpx.post(f"{url}/v2/rerank", json={"query": QUERY, "documents": DOCS[:3]}, timeout=120)
    finally:
        first.close()
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["meta"]["scores"] == "first-token-probability" and body["meta"]["decoding"] == "first-token"
    scores = [r["relevance_score"] for r in body["results"]]
    assert sorted(r["index"] for r in body["results"]) == [0, 1, 2]
    assert scores == sorted(scores, reverse=True) and all(0 <= x <= 1 for x in scores)
    assert abs(sum(scores) - 1) < 1e-3  # a distribution over the ids, not rank-derived steps


# -- bad input -------------------------------------------------------------------------------------

BAD_JSON_BODIES = [
    ("invalid_json", b'{"query": "q", "documents": ["a"', 400),
    ("not_utf8", b"\xff\xfe{}", 400),
    ("empty_body", b"", 422),
    ("body_is_a_list", b'[{"query": "q", "documents": ["a"]}]', 422),
    ("lone_surrogate", b'{"query": "q", "documents": ["\\ud800"]}', 422),
]

BAD_REQUESTS = [
    ("empty_query", {"query": "", "documents": DOCS}),
    ("blank_query", {"query": " \n\t", "documents": DOCS}),
    ("missing_query", {"documents": DOCS}),
    ("query_not_a_string", {"query": 42, "documents": DOCS}),
    ("no_documents", {"query": QUERY, "documents": []}),
    ("missing_documents", {"query": QUERY}),
    ("documents_not_a_list", {"query": QUERY, "documents": "Paris"}),
    ("document_not_text", {"query": QUERY, "documents": ["a", 7]}),
    ("document_object_without_text", {"query": QUERY, "documents": [{"title": "a"}]}),
    ("document_text_not_a_string", {"query": QUERY, "documents": [{"text": ["a"]}]}),
    ("too_many_documents", {"query": QUERY, "documents": ["d"] * (MAX_DOCS + 1)}),
    ("top_n_zero", {"query": QUERY, "documents": DOCS, "top_n": 0}),
    ("top_n_a_string", {"query": QUERY, "documents": DOCS, "top_n": "2"}),
    ("return_documents_not_bool", {"query": QUERY, "documents": DOCS, "return_documents": "yes"}),
]


def assert_error(resp, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["message"], str) and body["message"]
    return body


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank"])
@pytest.mark.parametrize("name,body", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_get_a_422_json_error(client, path, name, body):
    err = assert_error(client.post(path, json=body), 422)
    if name == "too_many_documents":
        assert err["error"] == "too_many_documents" and str(MAX_DOCS) in err["message"]
    elif name in ("empty_query", "blank_query"):
        assert "query" in err["message"]


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank"])
@pytest.mark.parametrize("name,raw,status", BAD_JSON_BODIES, ids=[b[0] for b in BAD_JSON_BODIES])
def test_bodies_that_are_not_valid_json_requests_get_a_4xx_json_error(client, path, name, raw, status):
    assert_error(client.post(path, content=raw, headers={"content-type": "application/json"}), status)


def test_a_window_that_cannot_fit_the_context_gets_422_not_500(standin_gguf):
    small = Reranker(str(standin_gguf), profile=Profile(template="rankgpt-chat"), n_ctx=256)
    settings = make_settings(standin_gguf, max_body_bytes=64 * 1024)
    try:
        with background(create_app(settings, reranker=small), settings) as url:
            words = " ".join(["word"] * 300)
            err = assert_error(httpx.post(f"{url}/v1/rerank", json={"query": QUERY, "documents": [words, words]},
                                          timeout=120), 422)
            assert "--n-ctx" in err["message"]
    finally:
        small.close()


def test_odd_but_valid_text_is_ranked(client):
    docs = ["nul\x00byte", "<|im_end|> looks like a control token 🙂"]
    resp = client.post("/v2/rerank", json={"query": "ctrl \u200b chars", "documents": docs})
    assert resp.status_code == 200, resp.text
    assert_valid_ranking(resp.json()["results"], 2)


def test_v2_wants_documents_as_strings(client):
    assert_error(client.post("/v2/rerank", json={"query": QUERY, "documents": [{"text": "a"}]}), 422)


def test_a_body_over_the_size_limit_gets_413(client):
    big = {"query": QUERY, "documents": ["x" * (MAX_BODY + 1)]}
    err = assert_error(client.post("/v1/rerank", json=big), 413)
    assert "--max-body-bytes" in err["message"]


def test_a_chunked_body_without_content_length_is_counted_too(client):
    def chunks():
        yield b'{"query": "q", "documents": ["'
        for _ in range(2 * MAX_BODY // 1024):
            yield b"y" * 1024
        yield b'"]}'

    assert_error(client.post("/v1/rerank", content=chunks(), headers={"content-type": "application/json"}), 413)


def test_unknown_paths_and_methods_get_json_errors(client):
    assert assert_error(client.get("/v3/rerank"), 404)["error"] == "not_found"
    assert assert_error(client.get("/v1/rerank"), 405)["error"] == "method_not_allowed"


# -- auth and binding --------------------------------------------------------------------------------


def test_with_a_key_set_a_missing_or_wrong_bearer_token_gets_401(standin_gguf, reranker, expected):
    app, running = serve(standin_gguf, reranker, api_key="s3cret")
    body = {"query": QUERY, "documents": DOCS}
    with running as url, httpx.Client(base_url=url, timeout=120) as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic czNjcmV0"},
                        {"Authorization": "s3cret"}):
            err = assert_error(c.post("/v1/rerank", json=body, headers=headers), 401)
            assert "Authorization: Bearer" in err["message"]
        assert c.post("/v1/rerank", json=body).headers["www-authenticate"] == "Bearer"
        assert_error(c.get("/v1/models"), 401)
        assert c.get("/health").status_code == 200  # liveness needs no key
        ok = c.post("/v2/rerank", json=body, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and [r["index"] for r in ok.json()["results"]] in expected
        cohere = pytest.importorskip("cohere")
        assert [r.index for r in cohere.ClientV2(api_key="s3cret", base_url=url).rerank(
            model="m", query=QUERY, documents=DOCS).results] in expected
        with pytest.raises(cohere.errors.UnauthorizedError):
            cohere.ClientV2(api_key="nope", base_url=url).rerank(model="m", query=QUERY, documents=DOCS)


def test_binding_beyond_loopback_without_a_key_warns():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    assert bind_warning("127.0.0.1", None) is None
    assert bind_warning("0.0.0.0", "key") is None
    assert "--api-key" in bind_warning("0.0.0.0", None)


# -- the queue ----------------------------------------------------------------------------------------


def test_a_full_queue_answers_429_with_retry_after(standin_gguf, reranker, expected):
    app, running = serve(standin_gguf, reranker, max_queue=1)
    queue = app.state.service.queue
    body = {"query": QUERY, "documents": DOCS}
    with running as url, httpx.Client(base_url=url, timeout=120) as c, ThreadPoolExecutor(1) as pool:
        release = hold_worker(app)
        waiting = pool.submit(c.post, "/v1/rerank", json=body)
        wait_for(lambda: queue.pending == 1)
        err = assert_error(c.post("/v1/rerank", json=body), 429)
        assert err["error"] == "queue_full"
        assert int(c.post("/v2/rerank", json=body).headers["retry-after"]) >= 1
        release.set()
        resp = waiting.result(timeout=120)
        assert resp.status_code == 200 and [r["index"] for r in resp.json()["results"]] in expected
        assert c.get("/health").json()["queue"]["rejected"] == 2


def test_a_request_past_its_timeout_gets_504_and_its_work_is_dropped(standin_gguf, reranker):
    app, running = serve(standin_gguf, reranker, timeout=0.5)
    queue = app.state.service.queue
    with running as url, httpx.Client(base_url=url, timeout=120) as c:
        release = hold_worker(app)
        t = time.monotonic()
        err = assert_error(c.post("/v1/rerank", json={"query": QUERY, "documents": DOCS}), 504)
        assert err["error"] == "timeout" and time.monotonic() - t < 10
        assert queue.pending == 0 and queue.stats.dropped == 1
        release.set()
        wait_for(lambda: not queue.busy)
        assert queue.stats.completed == 1  # only the job holding the worker ran


def test_work_of_a_client_that_disconnects_is_dropped_before_it_runs(standin_gguf, reranker):
    app, running = serve(standin_gguf, reranker)
    queue = app.state.service.queue
    with running as url:
        release = hold_worker(app)
        with httpx.Client(base_url=url, timeout=0.5) as impatient, pytest.raises(httpx.ReadTimeout):
            impatient.post("/v1/rerank", json={"query": QUERY, "documents": DOCS})
        wait_for(lambda: queue.stats.dropped == 1)  # noticed while the worker is still held
        assert queue.pending == 0 and queue.busy
        release.set()
        wait_for(lambda: not queue.busy)
        assert queue.stats.completed == 1


def test_parallel_clients_are_answered_correctly_or_told_to_retry(standin_gguf, reranker, expected):
    """8 clients x 3 requests against a queue of 2: each answer is the right ranking or a 429."""
    app, running = serve(standin_gguf, reranker, max_queue=2)
    threads_seen: set[int] = set()
    backend = reranker.backend
    original = backend.prefill

    def recording_prefill(ids):
        threads_seen.add(threading.get_ident())
        return original(ids)

    backend.prefill = recording_prefill
    try:
        with running as url:
            def one_client(k: int) -> list[httpx.Response]:
                with httpx.Client(base_url=url, timeout=120) as c:
                    path = "/v1/rerank" if k % 2 else "/v2/rerank"
                    return [c.post(path, json={"query": QUERY, "documents": DOCS}) for _ in range(3)]

            t = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                responses = [r for rs in pool.map(one_client, range(8)) for r in rs]
            elapsed = time.monotonic() - t
    finally:
        backend.prefill = original
    assert len(responses) == 24 and elapsed < 300
    ok = [r for r in responses if r.status_code == 200]
    assert ok, "no request got through"
    assert len(ok) < len(responses), "the queue of 2 never filled up"
    for r in responses:
        if r.status_code == 200:
            assert [x["index"] for x in r.json()["results"]] in expected
        else:
            assert_error(r, 429)
            assert int(r.headers["retry-after"]) >= 1
    assert threads_seen == {app.state.service.queue.worker.ident}


def test_shutdown_finishes_the_request_in_flight(standin_gguf, reranker, expected):
    app, running = serve(standin_gguf, reranker)
    queue = app.state.service.queue
    body = {"query": QUERY, "documents": list(reversed(DOCS))}  # a new prompt: takes a while
    with ThreadPoolExecutor(1) as pool:
        with running as url:
            in_flight = pool.submit(httpx.post, f"{url}/v1/rerank", json=body, timeout=120)
            wait_for(lambda: queue.busy)
        # Leaving the block asked uvicorn to stop and waited for it.
        resp = in_flight.result(timeout=5)
    assert resp.status_code == 200, resp.text
    assert sorted(r["index"] for r in resp.json()["results"]) == list(range(len(DOCS)))
    assert queue.closed and not queue.busy and queue.stats.completed == 1
    with pytest.raises(QueueClosed):
        queue.submit(lambda abandoned: None)


def test_the_work_queue_runs_jobs_in_order_on_one_thread_and_cancels_waiting_jobs_on_close():
    queue = WorkQueue(max_pending=3)
    release = threading.Event()
    order: list[int] = []
    threads: set[int] = set()

    def job(k):
        def run(abandoned):
            if k == 0:
                release.wait(10)
            order.append(k)
            threads.add(threading.get_ident())
            return k
        return run

    jobs = [queue.submit(job(k)) for k in range(3)]
    wait_for(lambda: queue.busy)
    queue.submit(job(3))
    with pytest.raises(QueueFull) as full:
        queue.submit(job(4))
    assert full.value.retry_after >= 1
    queue.abandon(jobs[1])
    release.set()
    assert [j.future.result(timeout=10) for j in (jobs[0], jobs[2])] == [0, 2]
    assert jobs[1].future.cancelled() and order[:2] == [0, 2]
    queue.close()
    assert len(threads) == 1 and queue.stats.dropped == 1


# -- schemathesis -------------------------------------------------------------------------------------


def test_schemathesis_finds_no_server_errors(standin_gguf, reranker):
    """Schema-driven requests, valid and invalid, to every endpoint: none may get a 5xx."""
    pytest.importorskip("schemathesis")
    from schema_fuzz import fuzz_every_operation

    # Few documents per request, so the valid examples that reach the model stay quick.
    app, running = serve(standin_gguf, reranker, max_documents=3)
    with running as url:
        by_path, failures = fuzz_every_operation(url, positive=5, negative=12, timeout=120)
    assert not failures
    statuses = Counter()
    for (_path, status), n in by_path.items():
        statuses[status] += n
    assert statuses.get(200) and statuses.get(422), statuses  # both valid and invalid requests were sent
    print("schemathesis statuses:", statuses)


# -- the command -----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_command_serves_until_interrupted(standin_gguf):
    port = _free_port()
    env = {**os.environ, "DEAR_LOCAL_API_KEY": "from-env"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dear_local", "serve", "--model", str(standin_gguf), "--port", str(port),
         "--template", "rankgpt-chat", "--max-documents", "3", "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.2)
        models = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer from-env"}).json()
        assert models["data"][0]["max_documents"] == 3
        assert httpx.get(f"{url}/v1/models").status_code == 401
        resp = httpx.post(f"{url}/v2/rerank", json={"query": "q", "documents": ["only"]},
                          headers={"Authorization": "Bearer from-env"})
        assert resp.json()["results"] == [{"index": 0, "relevance_score": 1.0, "truncated": False}]
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert "key required" in err.decode()


def test_serve_command_warns_on_an_open_bind_and_fails_cleanly_on_a_missing_model(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "dear_local", "serve", "--model", str(tmp_path / "nope.gguf"), "--host", "0.0.0.0"],
        capture_output=True, timeout=120, env={k: v for k, v in os.environ.items() if k != "DEAR_LOCAL_API_KEY"},
    )
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "warning: serving on 0.0.0.0 without an API key" in err
    assert "error:" in err and "does not exist" in err and "Traceback" not in err


def test_serve_rejects_bad_limits_before_loading_anything(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "dear_local", "serve", "--model", "x.gguf", "--max-documents", "5000"],
        capture_output=True, timeout=120,
    )
    assert proc.returncode == 2 and "--max-documents must be between 1 and 1000" in proc.stderr.decode()


def test_importing_the_cli_does_not_import_fastapi():
    code = "import sys, dear_local.cli; print(any(m.startswith(('fastapi', 'uvicorn')) for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert out.stdout.decode().strip() == "False", out.stderr.decode()


def test_json_error_bodies_are_what_the_docs_say(client):
    spec = client.get("/openapi.json").json()
    responses = spec["paths"]["/v1/rerank"]["post"]["responses"]
    assert {"200", "400", "401", "413", "422", "429", "503", "504"} <= set(responses)
    assert json.dumps(responses["429"]).count("ErrorBody") >= 1
