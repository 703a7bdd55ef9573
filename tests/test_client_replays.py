"""Replays of the requests RAG applications send to a reranker, against a real `dear-local serve` (fast tier).

Each test sends exactly what one client sends (path, headers, body, as its source builds them; the
docstring names the repository, the commit read and the file) to uvicorn on 127.0.0.1 serving the app
over the scripted fake model, and reads the answer the way that client reads it. The fake ranks every
window in reverse, so for up to 20 documents the last one is the best. A recorder around the app keeps
what arrived, so a test can also check that the client really sent what the recipe relies on.
The settings to enter in each application are in docs/clients.md.

Where a client is a Python package installed here (the Cohere SDK) it is called itself; the others
(TypeScript, or packages too heavy for the test environment) are replayed with the HTTP library they use.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urljoin

import pytest

pytest.importorskip("fastapi")

import httpx  # noqa: E402
import requests  # noqa: E402

from dear_local import Profile, Reranker  # noqa: E402
from dear_local.server import ServerSettings, create_app  # noqa: E402
from dear_local.server.runner import background  # noqa: E402
from fake_backend import FakeBackend  # noqa: E402

QUERY = "What is the capital of the United States?"
DOCS = [
    "Carson City is the capital city of the American state of Nevada.",
    "The Commonwealth of the Northern Mariana Islands is a group of islands in the Pacific Ocean.",
    "Washington, D.C., formally the District of Columbia, is the capital city of the United States.",
    "Capital punishment has existed in the United States since before it was a country.",
    "Capitalization in English grammar is the use of a capital letter at the start of a word.",
]
BEST_FIRST = [4, 3, 2, 1, 0]  # the fake model's order for DOCS
KEY = "sk-local-test"


@dataclass
class Recorder:
    """An ASGI wrapper that keeps each HTTP request's method, path, headers and body."""

    app: object
    seen: list[dict] = field(default_factory=list)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        entry = {"method": scope["method"], "path": scope["path"], "body": b"",
                 "headers": {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}}
        self.seen.append(entry)

        async def recording():
            message = await receive()
            if message["type"] == "http.request":
                entry["body"] += message.get("body", b"")
            return message

        return await self.app(scope, recording, send)

    def last(self, path: str | None = None) -> dict:
        hits = [e for e in self.seen if path is None or e["path"] == path]
        assert hits, f"no request to {path} arrived: {[e['path'] for e in self.seen]}"
        return {**hits[-1], "json": json.loads(hits[-1]["body"]) if hits[-1]["body"] else None}


@dataclass
class Served:
    url: str
    recorder: Recorder


@contextmanager
def serving(api_key: str | None = None):
    settings = ServerSettings(model="dear-8b-Q4_K_M.gguf", max_queue=16, timeout=60.0, max_documents=40,
                              api_key=api_key)
    reranker = Reranker("fake", profile=Profile(template="rankgpt-chat", decoding="greedy"), backend=FakeBackend())
    recorder = Recorder(create_app(settings, reranker=reranker))
    with background(recorder, settings) as url:
        yield Served(url, recorder)


@pytest.fixture(scope="module")
def open_server():
    """No API key: what a local install runs."""
    with serving() as served:
        yield served


@pytest.fixture(scope="module")
def keyed_server():
    """Started with --api-key sk-local-test."""
    with serving(api_key=KEY) as served:
        yield served


# -- Open WebUI ----------------------------------------------------------------------------------------


def open_webui_predict(url: str, api_key: str, model: str, sentences: list[tuple[str, str]], timeout=None):
    """open-webui/open-webui @ab233f82, backend/open_webui/retrieval/models/external.py, ExternalReranker.predict."""
    query = sentences[0][0]
    docs = [i[1] for i in sentences]
    payload = {"model": model, "query": query, "documents": docs, "top_n": len(docs)}
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}
    r = requests.post(f"{url}", headers=headers, json=payload, timeout=timeout)
    r.raise_for_status()
    data = r.json()
    if "results" in data:
        sorted_results = sorted(data["results"], key=lambda x: x["index"])
        return [result["relevance_score"] for result in sorted_results]
    return None


def test_open_webui_external_reranker_with_an_empty_key_gets_one_score_per_document(open_server):
    """Open WebUI, RAG_RERANKING_ENGINE=external (open-webui/open-webui @ab233f82c11b,
    backend/open_webui/retrieval/models/external.py): POST to the full URL with ``Authorization: Bearer ``
    and an empty key, ``top_n = len(documents)``; it sorts ``results`` by index and keeps the scores,
    so it needs one result per document. It sends several calls at once."""
    url = f"{open_server.url}/v1/rerank"
    pairs = [(QUERY, d) for d in DOCS]
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda _: open_webui_predict(url, "", "reranker", pairs, timeout=30), range(4)))
    sent = open_server.recorder.last("/v1/rerank")
    assert sent["headers"]["authorization"].strip() == "Bearer"  # the empty key, as requests sends it
    for scores in runs:
        assert scores is not None and len(scores) == len(DOCS)
        assert max(range(len(DOCS)), key=scores.__getitem__) == BEST_FIRST[0]
        assert all(0.0 <= s <= 1.0 for s in scores)


def test_open_webui_with_the_servers_key(keyed_server):
    """The same client (open-webui/open-webui @ab233f82c11b, backend/open_webui/retrieval/models/external.py)
    with RAG_EXTERNAL_RERANKER_API_KEY set to the server's --api-key; a wrong key is refused."""
    url = f"{keyed_server.url}/v1/rerank"
    scores = open_webui_predict(url, KEY, "dear", [(QUERY, d) for d in DOCS], timeout=30)
    assert len(scores) == len(DOCS) and scores.index(max(scores)) == BEST_FIRST[0]
    with pytest.raises(requests.HTTPError, match="401"):
        open_webui_predict(url, "wrong", "dear", [(QUERY, d) for d in DOCS], timeout=30)


# -- Dify ------------------------------------------------------------------------------------------------
# langgenius/dify-official-plugins @7af22831a58d (Dify's model providers moved there from langgenius/dify).


@pytest.mark.parametrize("endpoint", ["{url}/v1", "{url}"])
def test_dify_openai_compatible_provider(open_server, endpoint):
    """Dify, "OpenAI-API-compatible" rerank model (langgenius/dify-official-plugins @7af22831a58d,
    models/openai_api_compatible/models/rerank/rerank.py, OpenAIRerankModel._invoke): POST
    ``{endpoint_url}/rerank`` with a 60 s timeout, no Authorization header when the key is empty; it reads
    ``results[].index`` and ``relevance_score``, sorts by score and applies ``score_threshold``."""
    endpoint_url = endpoint.format(url=open_server.url).rstrip("/")
    headers = {"Content-Type": "application/json"}
    payload = {"model": "dear-8b", "query": QUERY, "documents": DOCS, "top_n": 3}
    response = requests.post(f"{endpoint_url}/rerank", headers=headers, json=payload, timeout=60)
    response.raise_for_status()
    result = response.json()
    rerank_docs = []
    for item in result.get("results", []):
        index = item.get("index", 0)
        score = item.get("relevance_score", 0.0)
        if index < len(DOCS):
            rerank_docs.append({"index": index, "score": score, "text": DOCS[index]})
    rerank_docs.sort(key=lambda x: x["score"], reverse=True)
    rerank_docs = [d for d in rerank_docs[:3] if d["score"] >= 0.5]  # top_n, then Dify's score_threshold
    assert [d["index"] for d in rerank_docs] == BEST_FIRST[:3]


def test_dify_openai_compatible_provider_with_multimodal_documents(open_server):
    """Dify's OpenAI-API-compatible provider with vision support on (langgenius/dify-official-plugins
    @7af22831a58d, models/openai_api_compatible/models/rerank/rerank.py, _invoke_multimodal and
    _to_score_multimodal_param): each document is ``{"content": [{"type": "text", "text": ...}]}``."""
    endpoint_url = f"{open_server.url}/v1"
    payload = {"model": "dear-8b", "query": QUERY,
               "documents": [{"content": [{"type": "text", "text": d}]} for d in DOCS], "top_n": len(DOCS)}
    response = requests.post(f"{endpoint_url}/rerank", headers={"Content-Type": "application/json"},
                             json=payload, timeout=60)
    response.raise_for_status()
    ranked = sorted(response.json()["results"], key=lambda x: x["relevance_score"], reverse=True)
    assert [x["index"] for x in ranked] == BEST_FIRST


@pytest.mark.parametrize("server_url", ["{url}", "{url}/v1"])
def test_dify_localai_provider_sends_bearer_none_and_reads_document_text_when_present(open_server, server_url):
    """Dify, LocalAI rerank model (langgenius/dify-official-plugins @7af22831a58d,
    models/localai/models/rerank/rerank.py, LocalaiRerankModel._invoke): POST ``URL(server_url) / "rerank"``
    with a 10 s timeout, ``Authorization: Bearer None`` when no key was entered, ``top_n`` null, the body
    as a JSON string; it reads ``document.text`` when a result has one, else the document at ``index``."""
    url = server_url.format(url=open_server.url)
    headers = {"Authorization": f"Bearer {None}", "Content-Type": "application/json"}
    data = {"model": "dear-8b", "query": QUERY, "documents": DOCS, "top_n": None}
    # yarl's URL(url) / "rerank" appends one path segment (yarl is not installed here).
    response = requests.post(f"{url.rstrip('/')}/rerank", headers=headers, data=json.dumps(data), timeout=10)
    response.raise_for_status()
    results = response.json()
    rerank_documents = []
    for result in results["results"]:
        index = result["index"]
        text = result["document"]["text"] if "document" in result else DOCS[index]
        if result["relevance_score"] >= 0.5:  # score_threshold
            rerank_documents.append((index, text, result["relevance_score"]))
    assert [(i, t) for i, t, _ in rerank_documents] == [(i, DOCS[i]) for i in BEST_FIRST[:3]]


def test_dify_tei_provider_checks_info_then_reranks_texts(open_server):
    """Dify, "Text Embedding Inference" provider (langgenius/dify-official-plugins @7af22831a58d,
    models/huggingface_tei/models/helper.py, TeiHelper._get_tei_extra_parameter and invoke_rerank, and
    models/huggingface_tei/models/rerank/rerank.py): ``GET {server_url}/info`` must name ``reranker`` as the
    first key of ``model_type``; then ``POST {server_url}/rerank {query, texts, return_text: true}`` answered
    by a bare array that it reads in order, stopping at ``top_n``."""
    server_url = open_server.url
    info = requests.get(f"{server_url}/info", headers={"Content-Type": "application/json"}, timeout=10)
    assert info.status_code == 200
    response_json = info.json()
    model_type = list(response_json.get("model_type", {}).keys())[0]
    assert model_type == "reranker"
    assert response_json.get("max_input_length", 512) > 0 and response_json.get("max_client_batch_size", 1) == 40
    resp = httpx.post(f"{server_url}/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True},
                      headers={"Content-Type": "application/json"}, timeout=60)
    resp.raise_for_status()
    docs = []
    for result in resp.json():
        if result["score"] >= 0.5:  # score_threshold
            docs.append((result["index"], result["text"], result["score"]))
        if len(docs) >= 2:  # top_n
            break
    assert [(i, t) for i, t, _ in docs] == [(i, DOCS[i]) for i in BEST_FIRST[:2]]


def test_dify_xinference_provider_reads_document_unconditionally(open_server):
    """Dify, Xinference rerank model (langgenius/dify-official-plugins @7af22831a58d,
    models/xinference/models/rerank/rerank.py) through xinference_client's RESTfulRerankModelHandle.rerank
    (xorbitsai/inference, xinference/client/restful/restful_client.py): POST ``{server_url}/v1/rerank`` with
    ``return_documents: true``, nulls for ``top_n``/``max_chunks_per_doc``/``return_len`` and ``kwargs`` as a
    JSON string; it reads ``result["document"]`` as a string or as ``{"text": ...}``, unconditionally."""
    request_body = {"model": "dear-8b", "documents": DOCS, "query": QUERY, "top_n": None,
                    "max_chunks_per_doc": None, "return_documents": True, "return_len": None,
                    "kwargs": json.dumps({})}
    response = requests.Session().post(f"{open_server.url}/v1/rerank", json=request_body, headers={})
    assert response.status_code == 200, response.text
    out = []
    for result in response.json()["results"]:
        page_content = result["document"] if isinstance(result["document"], str) else result["document"]["text"]
        out.append((result["index"], page_content, float(result.get("relevance_score") or 0.0)))
    assert [(i, t) for i, t, _ in out] == [(i, DOCS[i]) for i in BEST_FIRST]


# -- RAGFlow ---------------------------------------------------------------------------------------------
# infiniflow/ragflow @b1b8cd623520, rag/llm/rerank_model.py.


def ragflow_rank(res: dict, n: int) -> list[float]:
    """How every RAGFlow provider reads ``results``: a score per input position (0 for any missing)."""
    rank = [0.0] * n
    for d in res.get("results", []):
        rank[d["index"]] = d["relevance_score"]
    return rank


def ragflow_order(res: dict) -> list[int]:
    """The input positions of DOCS, best first, by the scores :func:`ragflow_rank` reads from ``res``."""
    rank = ragflow_rank(res, len(DOCS))
    return sorted(range(len(DOCS)), key=lambda i: -rank[i])


def ragflow_keyed_post(url: str, model: str) -> dict:
    """The request RAGFlow's OpenAI-API-Compatible and LocalAI providers both send: the key as a Bearer
    token, a 30 s timeout, ``top_n = len(texts)``."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    data = {"model": model, "query": QUERY, "documents": DOCS, "top_n": len(DOCS)}
    response = requests.post(url, headers=headers, json=data, timeout=30)
    response.raise_for_status()
    return response.json()


def test_ragflow_openai_api_compatible_provider(keyed_server):
    """RAGFlow, OpenAI-API-Compatible rerank (infiniflow/ragflow @b1b8cd623520, rag/llm/rerank_model.py,
    OpenAI_APIRerank): base URL ``http://host:8080/v1`` becomes ``.../v1/rerank``; a 30 s timeout, documents cut
    to 500 tokens (these are shorter), ``top_n = len(texts)``; it scatters ``relevance_score`` by ``index``."""
    base_url = f"{keyed_server.url}/v1"
    normalized = base_url.strip()
    url = normalized.rstrip("/") if "/rerank" in normalized else urljoin(f"{normalized.rstrip('/')}/", "rerank")
    assert ragflow_order(ragflow_keyed_post(url, "dear-8b")) == BEST_FIRST


def test_ragflow_localai_provider_posts_to_the_bare_rerank_path(keyed_server):
    """RAGFlow, LocalAI rerank (infiniflow/ragflow @b1b8cd623520, rag/llm/rerank_model.py, LocalAIRerank):
    ``urljoin(base_url, "/rerank")`` drops the base URL's path, so ``http://host:8080/v1`` posts to
    ``http://host:8080/rerank``, which must answer in a shape with ``results``."""
    url = urljoin(f"{keyed_server.url}/v1", "/rerank")
    assert url.endswith(":%d/rerank" % httpx.URL(keyed_server.url).port)
    assert ragflow_order(ragflow_keyed_post(url, "dear-8b___LocalAI")) == BEST_FIRST


def test_ragflow_huggingface_provider_speaks_tei_in_batches_of_8(open_server):
    """RAGFlow, HuggingFace rerank (infiniflow/ragflow @b1b8cd623520, rag/llm/rerank_model.py,
    HuggingfaceRerank.post): TEI's ``{query, texts, raw_scores: false, truncate: true}`` in batches of 8 to
    ``http://{base}/rerank``, no key; it adds each batch's offset to ``index``."""
    texts = [f"{DOCS[i % len(DOCS)]} (copy {i})" for i in range(20)]
    base_url = open_server.url.removeprefix("http://")  # RAGFlow's form: host:port, no scheme
    base_url = base_url.rstrip("/")
    if not base_url.startswith(("http://", "https://")):
        base_url = f"http://{base_url}"
    endpoint = base_url if base_url.endswith("/rerank") else f"{base_url}/rerank"
    scores = [0 for _ in range(len(texts))]
    for i in range(0, len(texts), 8):
        res = requests.post(endpoint, headers={"Content-Type": "application/json"},
                            json={"query": QUERY, "texts": texts[i: i + 8], "raw_scores": False, "truncate": True},
                            timeout=30)
        res.raise_for_status()
        for o in res.json():
            scores[o["index"] + i] = o["score"]
    batches = [scores[i: i + 8] for i in range(0, 20, 8)]
    assert [b.index(max(b)) for b in batches] == [7, 7, 3]  # the fake puts each batch's last text first
    assert len([e for e in open_server.recorder.seen if e["path"] == "/rerank"]) >= 3


def test_ragflow_xinference_provider_sends_string_booleans(open_server):
    """RAGFlow, Xinference rerank (infiniflow/ragflow @b1b8cd623520, rag/llm/rerank_model.py,
    XInferenceRerank): ``return_documents`` and ``return_len`` as the strings ``"true"``, to ``{base}/v1/rerank``."""
    headers = {"Content-Type": "application/json", "accept": "application/json"}
    data = {"model": "dear-8b", "query": QUERY, "return_documents": "true", "return_len": "true", "documents": DOCS}
    response = requests.post(f"{open_server.url}/v1/rerank", headers=headers, json=data, timeout=30)
    response.raise_for_status()
    res = response.json()
    assert ragflow_order(res) == BEST_FIRST
    assert all(r["document"]["text"] == DOCS[r["index"]] for r in res["results"])


# -- LibreChat -----------------------------------------------------------------------------------------------


def test_librechat_web_search_jina_reranker(keyed_server):
    """LibreChat web search, rerankerType jina (danny-avila/agents @28eab85b9f5d, src/tools/search/rerankers.ts,
    JinaReranker.rerank, which danny-avila/LibreChat runs through @librechat/agents): axios POST to
    JINA_API_URL with the hard-coded model ``jina-reranker-v2-base-multilingual``, ``top_n`` = topK (5),
    ``return_documents: true``, a 10 s timeout; it maps each result to ``document.text`` (or a string
    document, or the document at ``index``) and its ``relevance_score``. With no key it skips the call."""
    docs = DOCS + ["Another chunk about Washington.", "And one more chunk."]
    request_data = {"model": "jina-reranker-v2-base-multilingual", "query": QUERY, "top_n": 5,
                    "documents": docs, "return_documents": True}
    response = requests.post(f"{keyed_server.url}/v1/rerank", json=request_data, timeout=10,
                             headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    response.raise_for_status()
    data = response.json()
    assert data["results"] and data["model"] and data["usage"]["total_tokens"] > 0
    highlights = []
    for result in data["results"]:
        doc = result.get("document")
        if doc is not None:
            text = doc["text"] if isinstance(doc, dict) and "text" in doc else doc if isinstance(doc, str) else ""
        else:
            text = docs[result["index"]]
        highlights.append({"text": text, "score": result["relevance_score"]})
    assert [h["text"] for h in highlights] == [docs[i] for i in (6, 5, 4, 3, 2)]


# -- LiteLLM ---------------------------------------------------------------------------------------------------


def test_litellm_cohere_provider_v1(keyed_server):
    """LiteLLM ``rerank(model="cohere/...", api_base=...)`` (BerriAI/litellm @f58e9027bf47,
    litellm/llms/cohere/rerank/transformation.py, CohereRerankConfig): POST ``{api_base}/v1/rerank`` with
    Authorization, ``accept`` and ``content-type``; the body is the request model dumped without nulls,
    ``return_documents`` true by default; the answer is read as ``RerankResponse(**json)``: id, results, meta."""
    api_base = keyed_server.url.rstrip("/")
    url = api_base if api_base.endswith("/v1/rerank") else f"{api_base}/v1/rerank"
    headers = {"Authorization": f"Bearer {KEY}", "accept": "application/json", "content-type": "application/json"}
    body = {"model": "rerank-english-v3.0", "query": QUERY, "documents": DOCS, "top_n": 3, "return_documents": True}
    raw = httpx.post(url, headers=headers, json=body, timeout=60)
    assert raw.status_code == 200, raw.text
    resp = raw.json()
    assert resp["id"] and resp["meta"]["billed_units"]["search_units"] == 1
    assert resp["meta"]["tokens"]["input_tokens"] > 0
    assert [(r["index"], r["document"]["text"]) for r in resp["results"]] == [(i, DOCS[i]) for i in BEST_FIRST[:3]]


def test_litellm_cohere_provider_v2_sends_max_tokens_per_doc(keyed_server):
    """LiteLLM's Cohere v2 config (BerriAI/litellm @95e82f60c465, litellm/llms/cohere/rerank_v2/transformation.py,
    CohereRerankV2Config): POST ``{api_base}/v2/rerank`` with ``max_tokens_per_doc``."""
    headers = {"Authorization": f"Bearer {KEY}", "accept": "application/json", "content-type": "application/json"}
    body = {"model": "rerank-v3.5", "query": QUERY, "documents": DOCS, "top_n": 2, "return_documents": True,
            "max_tokens_per_doc": 4096}
    raw = httpx.post(f"{keyed_server.url}/v2/rerank", headers=headers, json=body, timeout=60)
    assert raw.status_code == 200, raw.text
    assert [r["index"] for r in raw.json()["results"]] == BEST_FIRST[:2]


def test_litellm_huggingface_provider_speaks_tei(open_server):
    """LiteLLM ``rerank(model="huggingface/...", api_base=...)`` (BerriAI/litellm @c82866459f95,
    litellm/llms/huggingface/rerank/transformation.py, HuggingFaceRerankConfig): POST ``{api_base}/rerank``
    with ``raw_scores: false, truncate: false, truncation_direction: "Right"`` and the Cohere parameters mapped
    to TEI's (``texts``, ``return_text``, plus ``top_n``); it reads the bare array's index, score and text."""
    api_base = open_server.url.rstrip("/")
    url = api_base if api_base.endswith("/rerank") else f"{api_base}/rerank"
    body = {"raw_scores": False, "truncate": False, "truncation_direction": "Right",
            "query": QUERY, "texts": DOCS, "top_n": 3, "return_text": True}
    raw = httpx.post(url, headers={"accept": "application/json", "content-type": "application/json"}, json=body,
                     timeout=60)
    assert raw.status_code == 200, raw.text
    results = []
    for item in raw.json():
        index, score = item.get("index"), item.get("score")
        if index is None or score is None:
            continue
        results.append({"index": index, "relevance_score": score, "document": {"text": item.get("text", "")}})
    assert [r["index"] for r in results] == BEST_FIRST  # TEI has no top_n: every text comes back
    assert [r["document"]["text"] for r in results] == [DOCS[i] for i in BEST_FIRST]


# -- AnswerDotAI/rerankers ---------------------------------------------------------------------------------------


def rerankers_api_rank(url: str, api_key: str, api_provider: str, model: str, query: str, docs: list[str]):
    """AnswerDotAI/rerankers @3aa3a6ed, rerankers/models/api_rankers.py, APIRanker(..., url=...).rank: a JSON
    string body ``{model, query, <documents key>: texts, top_n: len(docs), <return key>: true}`` with
    ``accept``/``content-type`` and ``Authorization: Bearer KEY``; the results as (index, score) in answer order."""
    documents_key = {"text-embeddings-inference": "texts"}.get(api_provider, "documents")
    return_key = {"text-embeddings-inference": "return_text"}.get(api_provider, "return_documents")
    payload = json.dumps({"model": model, "query": query, documents_key: docs, "top_n": len(docs), return_key: True})
    headers = {"accept": "application/json", "content-type": "application/json", "Authorization": f"Bearer {api_key}"}
    response = requests.post(url, headers=headers, data=payload).json()
    results_key = {"text-embeddings-inference": None}.get(api_provider, "results")
    score_key = {"text-embeddings-inference": "score"}.get(api_provider, "relevance_score")
    text = (lambda r: r["text"]) if api_provider == "text-embeddings-inference" else (lambda r: r["document"]["text"])
    rows = response[results_key] if results_key else response
    return [(r["index"], r[score_key], text(r)) for r in rows]


@pytest.mark.parametrize(("provider", "path"), [("jina", "/v1/rerank"), ("cohere", "/v1/rerank"),
                                                ("text-embeddings-inference", "/rerank")])
def test_answerdotai_rerankers_api_ranker_with_a_custom_url(keyed_server, provider, path):
    """rerankers' ``Reranker("dear-8b", api_provider=..., api_key=..., url=...)`` (AnswerDotAI/rerankers
    @3aa3a6ed, rerankers/models/api_rankers.py): Cohere/Jina bodies to ``/v1/rerank``, TEI's to ``/rerank``;
    it reads ``results`` (or TEI's bare array) in answer order and the text it asked to have back."""
    got = rerankers_api_rank(keyed_server.url.rstrip("/") + path, KEY, provider, "dear-8b", QUERY, DOCS)
    assert [i for i, _, _ in got] == BEST_FIRST
    assert [t for _, _, t in got] == [DOCS[i] for i in BEST_FIRST]
    scores = [s for _, s, _ in got]
    assert scores == sorted(scores, reverse=True)
    assert keyed_server.recorder.last(path)["headers"]["authorization"] == f"Bearer {KEY}"


# -- Infinity ---------------------------------------------------------------------------------------------------


def test_infinity_client_rerank(open_server):
    """The Infinity client (michaelfeil/infinity @fcb951cb679d, libs/client_infinity/infinity_client/
    infinity_client/api/default/rerank.py and models/rerank_input.py, re_rank_result.py, re_rank_object.py):
    POST ``/rerank`` with ``{query, documents, return_documents, raw_scores, model, top_n}``; ReRankResult.from_dict
    needs ``results``, ``model`` and ``usage`` (``prompt_tokens``, ``total_tokens``) and takes ``object``, ``id``,
    ``created``; each result's ``document`` is a string."""
    body = {"query": QUERY, "documents": DOCS, "return_documents": True, "raw_scores": False,
            "model": "mixedbread-ai/mxbai-rerank-xsmall-v1", "top_n": 3}
    response = httpx.post(f"{open_server.url}/rerank", json=body, headers={"Content-Type": "application/json"},
                          timeout=60)
    assert response.status_code == 200, response.text
    d = response.json()
    results = [(r.pop("relevance_score"), r.pop("index"), r.pop("document", None)) for r in d.pop("results")]
    model, usage = d.pop("model"), d.pop("usage")
    assert model == "mixedbread-ai/mxbai-rerank-xsmall-v1"
    assert usage["prompt_tokens"] > 0 and usage["total_tokens"] >= usage["prompt_tokens"]
    assert d.pop("object") == "rerank" and d.pop("id") and isinstance(d.pop("created"), int)
    assert [(i, doc) for _, i, doc in results] == [(i, DOCS[i]) for i in BEST_FIRST[:3]]


# -- Haystack ---------------------------------------------------------------------------------------------------


def test_haystack_cohere_ranker_sends_top_n_10_for_5_documents(open_server):
    """Haystack's CohereRanker (deepset-ai/haystack-core-integrations @17f6fe290c0e,
    integrations/cohere/src/haystack_integrations/components/rankers/cohere/ranker.py): the Cohere SDK's v1
    client, ``client_name="haystack"``, ``rerank(model, query, documents, max_chunks_per_doc=None, top_n=10)``
    whatever the number of documents; it scores ``documents[index]`` in the order of ``results``."""
    cohere = pytest.importorskip("cohere")
    client = cohere.Client(api_key="unused", base_url=open_server.url, client_name="haystack")
    response = client.rerank(model="rerank-english-v2.0", query=QUERY, documents=DOCS, max_chunks_per_doc=None,
                             top_n=10)
    sent = open_server.recorder.last("/v1/rerank")
    assert sent["json"]["top_n"] == 10 and len(sent["json"]["documents"]) == 5
    ranked = [(output.index, output.relevance_score) for output in response.results]
    assert [i for i, _ in ranked] == BEST_FIRST


def test_cohere_sdk_v2_with_priority_and_max_tokens_per_doc(open_server):
    """The Cohere SDK's v2 client (cohere 5+, ``ClientV2.rerank``; the request is built in
    cohere/v2/raw_client.py): POST ``/v2/rerank`` carrying ``priority`` and ``max_tokens_per_doc``."""
    cohere = pytest.importorskip("cohere")
    co = cohere.ClientV2(api_key="unused", base_url=open_server.url, timeout=60)
    resp = co.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS, top_n=3, max_tokens_per_doc=512, priority=1)
    sent = open_server.recorder.last("/v2/rerank")
    assert sent["json"]["max_tokens_per_doc"] == 512 and sent["json"]["priority"] == 1
    assert [r.index for r in resp.results] == BEST_FIRST[:3] and resp.meta.tokens.input_tokens > 0


def test_haystack_hugging_face_tei_ranker(open_server):
    """Haystack's HuggingFaceTEIRanker (deepset-ai/haystack @40d4534b7e29,
    haystack/components/rankers/hugging_face_tei.py, run and _compose_response): POST
    ``urljoin(url, "/rerank")`` with ``{query, texts, raw_scores}`` (plus ``truncate: true`` and
    ``truncation_direction`` when one is given), no Authorization without a token; a dict with ``error`` is a
    failure, a list is read as ranks in order, cut to ``top_k``."""
    for extra in ({}, {"truncate": True, "truncation_direction": "Left"}):
        payload = {"query": QUERY, "texts": DOCS, "raw_scores": False, **extra}
        response = requests.request("POST", urljoin(open_server.url, "/rerank"), json=payload, timeout=30, headers={})
        result = response.json()
        assert not (isinstance(result, dict) and "error" in result), result
        assert isinstance(result, list)
        final_k = min(3, len(result))
        ranked = [(item["index"], item["score"]) for item in result[:final_k]]
        assert [i for i, _ in ranked] == BEST_FIRST[:3]


def test_a_tei_client_gets_a_tei_style_error_it_recognises(open_server):
    """Haystack's HuggingFaceTEIRanker (deepset-ai/haystack @40d4534b7e29,
    haystack/components/rankers/hugging_face_tei.py, _compose_response) raises on a dict holding ``error``:
    a bad request must come back as one, not as something it would try to rank."""
    r = requests.post(urljoin(open_server.url, "/rerank"), json={"query": QUERY, "texts": []}, timeout=30)
    assert r.status_code == 422 and isinstance(r.json(), dict) and "error" in r.json()
