"""The HTTP contract of `dear-local serve` over the scripted fake backend (fast tier).

The fake ranks every window in reverse, so the expected order is known exactly.
Queueing, the Cohere SDK, schemathesis and the real stand-in are in test_server.py; the requests
of real client applications are replayed in test_client_replays.py, deadlines in test_server_deadlines.py.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from dear_local import Profile, Reranker  # noqa: E402
from dear_local.server import ServerSettings, create_app  # noqa: E402
from fake_backend import FakeBackend  # noqa: E402

DOCS = ["Paris is the capital of France.", "Bananas are yellow.", "The Eiffel Tower is in Paris.", "Cats sleep."]


def _client(api_key: str | None = None, decoding: str = "greedy") -> TestClient:
    reranker = Reranker("fake", profile=Profile(template="rankgpt-chat", decoding=decoding), backend=FakeBackend())
    settings = ServerSettings(model="fake.gguf", max_queue=2, timeout=30.0, max_documents=6, api_key=api_key)
    return TestClient(create_app(settings, reranker=reranker))


@pytest.fixture(scope="module")
def client():
    with _client() as c:
        yield c


def test_v1_answers_in_the_cohere_shape_with_the_models_order(client):
    r = client.post("/v1/rerank", json={"query": "capital", "documents": DOCS, "top_n": 3, "return_documents": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["index"] for x in body["results"]] == [3, 2, 1]
    scores = [x["relevance_score"] for x in body["results"]]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
    assert [x["document"]["text"] for x in body["results"]] == [DOCS[3], DOCS[2], DOCS[1]]
    assert body["model"] and body["id"]


def test_v1_takes_jina_objects_and_v2_strings(client):
    v1 = client.post("/v1/rerank", json={"query": "q", "documents": [{"text": d} for d in DOCS]})
    v2 = client.post("/v2/rerank", json={"query": "q", "documents": DOCS, "top_n": 2})
    assert v1.status_code == v2.status_code == 200, (v1.text, v2.text)
    assert [x["index"] for x in v1.json()["results"]] == [3, 2, 1, 0]
    assert "document" not in v1.json()["results"][0]
    assert [x["index"] for x in v2.json()["results"]] == [3, 2]


def test_first_token_scores_are_the_models_probabilities():
    with _client(decoding="first-token") as c:
        r = c.post("/v1/rerank", json={"query": "q", "documents": DOCS[:3]})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert results[0]["index"] == 2 and results[0]["relevance_score"] > 0.9
    assert abs(sum(x["relevance_score"] for x in results) - 1.0) < 1e-6


# (body, a word the 422 names); with max_documents=6. test_remote.py runs it against `serve --server`.
BAD_REQUESTS = [
    ({"query": "", "documents": DOCS}, "query"),
    ({"query": "q", "documents": []}, "documents"),
    ({"query": "q", "documents": DOCS * 2}, "6"),
    ({"query": "q", "documents": DOCS, "top_n": 0}, "top_n"),
    ({"documents": DOCS}, "query"),
]


def post_json(client, path: str, body: dict):
    """POST ``body`` as ASCII JSON, so lone surrogates go as the escapes a client can send."""
    return client.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})


# The same mistakes in TEI's shape (texts), on both paths that take it.
TEI_BAD_REQUESTS = [
    ({"query": "", "texts": DOCS}, "query"),
    ({"query": "q", "texts": []}, "texts"),
    ({"query": "q", "texts": DOCS * 2}, "6"),
    ({"query": "q", "texts": ["a", {"text": "b"}]}, "texts.1"),
    ({"query": "q", "texts": "Paris"}, "texts"),
    ({"query": "q", "texts": ["\ud800"]}, "surrogate"),
    ({"query": "q", "texts": DOCS, "return_text": "yes"}, "return_text"),
    ({"query": "q", "texts": DOCS, "raw_scores": 1}, "raw_scores"),
    ({"query": "q", "texts": DOCS, "truncation_direction": "up"}, "truncation_direction"),
    ({"texts": DOCS}, "query"),
]


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank"])
@pytest.mark.parametrize("body, needle", BAD_REQUESTS)
def test_bad_requests_get_a_json_422_naming_the_field(client, body, needle, path):
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    assert needle in r.text and r.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank"])
@pytest.mark.parametrize("body, needle", TEI_BAD_REQUESTS)
def test_bad_tei_requests_get_a_json_422_naming_the_field(client, body, needle, path):
    r = post_json(client, path, body)
    assert r.status_code == 422, r.text
    message = r.json()["message"]
    assert needle in message and "\n" not in message and "TEI-shape" not in message, message


# -- the shapes and leniencies of issue 27 ---------------------------------------------------------------


def test_a_texts_body_is_answered_as_tei_with_a_bare_array_sorted_by_score(client):
    for path in ("/rerank", "/v1/rerank"):
        r = client.post(path, json={"query": "q", "texts": DOCS, "raw_scores": True, "return_text": "true",
                                    "truncate": True, "truncation_direction": "Left"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert [x["index"] for x in body] == [3, 2, 1, 0] and [x["text"] for x in body] == DOCS[::-1]
        assert [x["score"] for x in body] == sorted((x["score"] for x in body), reverse=True)
    plain = client.post("/rerank", json={"query": "q", "texts": DOCS}).json()
    assert all(set(x) == {"index", "score"} for x in plain)


def test_info_answers_as_tei_with_this_servers_limits(client):
    info = client.get("/info").json()
    assert list(info["model_type"]) == ["reranker"]
    assert info["max_client_batch_size"] == 6 and info["max_input_length"] > 0 and info["auto_truncate"] is True
    assert info["model_id"] == info["served_model_name"] == "fake" and info["template"] == "rankgpt-chat"


def test_bare_rerank_with_documents_answers_in_infinitys_shape_and_echoes_the_model(client):
    r = client.post("/rerank", json={"model": "BAAI/bge-reranker-v2-m3", "query": "q", "documents": DOCS,
                                     "return_documents": True, "raw_scores": False})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "rerank" and body["model"] == "BAAI/bge-reranker-v2-m3"
    assert isinstance(body["created"], int) and body["id"] and set(body["usage"]) == {"prompt_tokens", "total_tokens"}
    assert [(x["index"], x["document"]) for x in body["results"]] == [(i, DOCS[i]) for i in (3, 2, 1, 0)]
    unnamed = client.post("/rerank", json={"query": "q", "documents": DOCS}).json()
    assert unnamed["model"] == "fake" and "document" not in unnamed["results"][0]


def test_the_leniencies_clients_need(client):
    """String booleans, unknown fields, top_n past the end, any model name, Dify's content documents."""
    dify = [{"content": [{"type": "text", "text": d}]} for d in DOCS[:2]] + [{"text": DOCS[2]}, DOCS[3]]
    for path in ("/v1/rerank", "/rerank"):
        r = client.post(path, json={"model": "no-such-model", "query": "q", "documents": dify, "top_n": 10,
                                    "return_documents": "TRUE", "return_len": "true", "kwargs": "{}",
                                    "priority": 0, "max_tokens_per_doc": 512})
        assert r.status_code == 200, (path, r.text)
        results = r.json()["results"]
        assert [x["index"] for x in results] == [3, 2, 1, 0]
        texts = [x["document"]["text"] if path == "/v1/rerank" else x["document"] for x in results]
        assert texts == DOCS[::-1]
    v2 = client.post("/v2/rerank", json={"query": "q", "documents": DOCS, "return_documents": "false", "top_n": 99})
    assert v2.status_code == 200 and len(v2.json()["results"]) == 4 and "document" not in v2.json()["results"][0]
    # options a client leaves unset as null take their defaults; a null `documents` beside `texts` is TEI's shape
    nulls = client.post("/rerank", json={"query": "q", "documents": DOCS, "return_documents": None, "top_n": None})
    assert nulls.status_code == 200 and "document" not in nulls.json()["results"][0], nulls.text
    tei = client.post("/rerank", json={"query": "q", "texts": DOCS, "documents": None, "return_text": None})
    assert tei.status_code == 200 and [x["index"] for x in tei.json()] == [3, 2, 1, 0] and "text" not in tei.json()[0]


@pytest.mark.parametrize("document, needle", [
    ({"content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}, "image_url"),
    ({"content": []}, '"content" must be a non-empty list'),
    ({"content": "text"}, '"content" must be a non-empty list'),
    ({"content": [{"type": "text", "text": 5}]}, 'needs a "text" string'),
    ({"content": [{"type": "text", "text": "\ud800"}]}, "surrogate"),
])
def test_a_content_document_that_is_not_all_text_is_refused_naming_the_part(client, document, needle):
    r = post_json(client, "/rerank", {"query": "q", "documents": ["a", document]})
    assert r.status_code == 422 and needle in r.json()["message"] and "documents.1" in r.json()["message"], r.text


def test_health_and_models(client):
    assert client.get("/health").json()["status"] == "ok"
    (card,) = client.get("/v1/models").json()["data"]
    assert (card["template"], card["decoding"], card["max_documents"]) == ("rankgpt-chat", "greedy", 6)


def test_a_key_is_required_when_set():
    with _client(api_key="s3cret") as c:
        assert c.post("/v1/rerank", json={"query": "q", "documents": DOCS}).status_code == 401
        bad = c.post("/v1/rerank", json={"query": "q", "documents": DOCS}, headers={"Authorization": "Bearer no"})
        assert bad.status_code == 401
        ok = c.post("/v1/rerank", json={"query": "q", "documents": DOCS}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        for path, body in (("/rerank", {"query": "q", "documents": DOCS}), ("/rerank", {"query": "q", "texts": DOCS})):
            for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer no"}):
                assert c.post(path, json=body, headers=headers).status_code == 401, (path, headers)
            assert c.post(path, json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/info").status_code == 401
        assert c.get("/info", headers={"Authorization": "Bearer s3cret"}).status_code == 200


@pytest.mark.parametrize("path", ["//rerank", "/v1/rerank/", "/v1//rerank", "//v2/rerank/"])
def test_a_base_url_with_a_stray_slash_reaches_its_route(client, path):
    """A client joining a base URL that ends in "/" with "/rerank" sends "//rerank"; one that keeps a
    trailing slash sends "/v1/rerank/". Both rank (no 404, no redirect a POST client would not follow)."""
    url = str(client.base_url).rstrip("/") + path  # a whole URL: "//rerank" alone would name a host
    r = client.post(url, json={"query": "q", "documents": DOCS})
    assert r.status_code == 200, r.text
    assert [x["index"] for x in r.json()["results"]] == [3, 2, 1, 0]


def test_an_unknown_path_or_method_names_the_routes_that_exist(client):
    r = client.post("/v1/rerank/rerank", json={"query": "q", "documents": DOCS})
    assert r.status_code == 404 and "/v1/rerank/rerank" in r.json()["message"]
    assert "POST /rerank, /v1/rerank and /v2/rerank" in r.json()["message"] and "http://HOST:PORT" in r.json()["message"]
    wrong = client.get("/v1/rerank")
    assert wrong.status_code == 405 and "does not take GET" in wrong.json()["message"]
