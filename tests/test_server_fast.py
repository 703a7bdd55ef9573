"""The HTTP contract of `dear-local serve` over the scripted fake backend (fast tier).

The fake ranks every window in reverse, so the expected order is known exactly.
Queueing, the Cohere SDK, schemathesis and the real stand-in are in test_server.py.
"""

from __future__ import annotations

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


@pytest.mark.parametrize("body, needle", BAD_REQUESTS)
def test_bad_requests_get_a_json_422_naming_the_field(client, body, needle):
    r = client.post("/v1/rerank", json=body)
    assert r.status_code == 422, r.text
    assert needle in r.text and r.headers["content-type"].startswith("application/json")


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
