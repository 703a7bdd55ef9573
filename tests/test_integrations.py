"""The in-process adapters (dear_local.integrations) against the real LangChain, LlamaIndex and Haystack
packages, and a TEI client (Haystack's HuggingFaceTEIRanker) against a real `dear-local serve`.

Fast tier: the scripted fake model (tests/fake_backend.py), which ranks every window in reverse, so for
up to 20 documents the last is the best and scores are rank-derived: (n - rank) / n. The framework
classes are the real ones. Slow tier (the stand-in fixtures): one short query per framework through
SmolLM2, which checks the real model path, not the ranking quality.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import replace
from inspect import signature

import pytest

from dear_local import Profile, Reranker
from dear_local.errors import UserInputError
from fake_backend import FakeBackend

QUERY = "What is the capital of the United States?"
TEXTS = [
    "Carson City is the capital city of the American state of Nevada.",
    "The Commonwealth of the Northern Mariana Islands is a group of islands in the Pacific Ocean.",
    "Washington, D.C., formally the District of Columbia, is the capital city of the United States.",
    "Capital punishment has existed in the United States since before it was a country.",
    "Capitalization in English grammar is the use of a capital letter at the start of a word.",
]
BEST_FIRST = [4, 3, 2, 1, 0]  # the fake model's order for TEXTS
SCORES = [1.0, 0.8, 0.6, 0.4, 0.2]  # rank-derived, for 5 documents
FRAMEWORKS = {"langchain": "langchain_core", "llamaindex": "llama_index", "haystack": "haystack"}


def fake_reranker() -> Reranker:
    return Reranker("fake", profile=Profile(template="rankgpt-chat", decoding="greedy"), backend=FakeBackend())


# -- every adapter ------------------------------------------------------------------------------------


def _python(code: str, blocked: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    block = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in blocked)
    return subprocess.run([sys.executable, "-c", block + code], capture_output=True, text=True, timeout=120)


def test_importing_dear_local_imports_no_framework():
    code = ("import sys, dear_local, dear_local.integrations\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {set(FRAMEWORKS.values())!r}))")
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("extra", sorted(FRAMEWORKS))
def test_an_adapter_without_its_framework_names_the_extra(extra):
    proc = _python(f"import dear_local.integrations.{extra}", blocked=(FRAMEWORKS[extra],))
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("dear_local.errors.MissingExtraError: ")
    assert f'pip install "dear-local[{extra}]"' in last


# What each adapter imports from inside its framework: missing, it means an installed version without it.
INNER = {"langchain": "langchain_core.documents", "llamaindex": "llama_index.core.postprocessor.types",
         "haystack": "haystack.core"}


@pytest.mark.parametrize("extra", sorted(FRAMEWORKS))
def test_an_installed_framework_without_what_the_adapter_uses_is_named_with_its_version(extra):
    """Not "not installed" when it is: an old or new version that lacks a module the adapter imports
    gets one line naming the installed version and the upgrade."""
    proc = _python(f"import dear_local.integrations.{extra}", blocked=(INNER[extra],))
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("dear_local.errors.MissingExtraError: the installed "), last
    assert "not installed" not in last and f'pip install -U "dear-local[{extra}]"' in last, last


# -- LangChain ----------------------------------------------------------------------------------------


def langchain_docs():
    from langchain_core.documents import Document

    return [Document(page_content=t, metadata={"source": f"doc{i}"}, id=f"id{i}") for i, t in enumerate(TEXTS)]


def test_langchain_compressor_keeps_top_n_best_first_with_relevance_score_in_metadata(fake_gguf):
    pytest.importorskip("langchain_core")
    from dear_local.integrations.langchain import DearLocalRerank

    docs = langchain_docs()
    out = DearLocalRerank(str(fake_gguf), top_n=3).compress_documents(docs, QUERY)
    assert [d.page_content for d in out] == [TEXTS[i] for i in BEST_FIRST[:3]]
    assert [d.metadata for d in out] == [{"source": f"doc{i}", "relevance_score": s}
                                         for i, s in zip(BEST_FIRST, SCORES[:3])]
    assert [d.id for d in out] == [f"id{i}" for i in BEST_FIRST[:3]]
    assert all("relevance_score" not in d.metadata for d in docs)  # the input is not changed


def test_langchain_top_n_none_keeps_every_document_and_the_default_is_three(fake_gguf):
    pytest.importorskip("langchain_core")
    from dear_local.integrations.langchain import DearLocalRerank

    reranker = fake_reranker()
    everything = DearLocalRerank(reranker, top_n=None).compress_documents(langchain_docs(), QUERY)
    assert [d.metadata["source"] for d in everything] == [f"doc{i}" for i in BEST_FIRST]
    assert [d.metadata["relevance_score"] for d in everything] == SCORES
    assert len(DearLocalRerank(reranker).compress_documents(langchain_docs(), QUERY)) == 3
    assert DearLocalRerank(reranker, top_n=10).compress_documents(langchain_docs()[:2], QUERY)[0].id == "id1"


def test_langchain_no_documents_give_none_and_bad_arguments_are_refused(fake_gguf):
    pytest.importorskip("langchain_core")
    from dear_local.integrations.langchain import DearLocalRerank

    compressor = DearLocalRerank(str(fake_gguf))
    assert compressor.compress_documents([], QUERY) == []
    with pytest.raises(UserInputError, match="query must be a non-empty str"):
        compressor.compress_documents(langchain_docs(), "  ")
    with pytest.raises(UserInputError, match="top_n must be None or an int of at least 1, got 0"):
        DearLocalRerank(str(fake_gguf), top_n=0)
    with pytest.raises(UserInputError, match="go to Reranker"):
        DearLocalRerank(fake_reranker(), decoding="first-token")
    with pytest.raises(TypeError, match="unexpected keyword argument 'temperature'"):
        DearLocalRerank(str(fake_gguf), temperature=0.5)


def test_langchain_async_compress_runs_concurrent_calls_one_at_a_time_on_a_local_model(fake_gguf):
    pytest.importorskip("langchain_core")
    from dear_local.integrations.langchain import DearLocalRerank

    compressor = DearLocalRerank(str(fake_gguf), top_n=2)

    async def both():
        return await asyncio.gather(compressor.acompress_documents(langchain_docs(), QUERY),
                                    compressor.acompress_documents(langchain_docs()[:3], QUERY))

    five, three = asyncio.run(both())
    assert [d.id for d in five] == ["id4", "id3"]
    assert [d.id for d in three] == ["id2", "id1"]


# -- LlamaIndex ---------------------------------------------------------------------------------------


def llamaindex_nodes():
    from llama_index.core.schema import NodeWithScore, TextNode

    return [NodeWithScore(node=TextNode(text=t, id_=f"id{i}", metadata={"source": f"doc{i}"}), score=0.5)
            for i, t in enumerate(TEXTS)]


def test_llamaindex_postprocessor_returns_top_n_nodes_with_scores_best_first(fake_gguf):
    pytest.importorskip("llama_index.core")
    from llama_index.core.schema import QueryBundle

    from dear_local.integrations.llamaindex import DearLocalRerank

    nodes = llamaindex_nodes()
    out = DearLocalRerank(str(fake_gguf), top_n=3).postprocess_nodes(nodes, QueryBundle(QUERY))
    assert [n.node.node_id for n in out] == [f"id{i}" for i in BEST_FIRST[:3]]
    assert [n.score for n in out] == SCORES[:3]
    assert all(n.node is nodes[i].node for n, i in zip(out, BEST_FIRST))  # the same nodes, metadata and all
    assert [n.score for n in nodes] == [0.5] * 5  # the input is not changed


def test_llamaindex_defaults_query_str_top_n_none_and_empty_input(fake_gguf):
    pytest.importorskip("llama_index.core")
    from dear_local.integrations.llamaindex import DearLocalRerank

    reranker = fake_reranker()
    assert len(DearLocalRerank(reranker).postprocess_nodes(llamaindex_nodes(), query_str=QUERY)) == 2
    everything = DearLocalRerank(reranker, top_n=None).postprocess_nodes(llamaindex_nodes(), query_str=QUERY)
    assert [n.score for n in everything] == SCORES
    assert DearLocalRerank(reranker).postprocess_nodes([], query_str=QUERY) == []
    with pytest.raises(ValueError, match="Missing query bundle"):
        DearLocalRerank(reranker).postprocess_nodes(llamaindex_nodes())
    with pytest.raises(UserInputError, match="top_n must be None or an int of at least 1"):
        DearLocalRerank(reranker, top_n=-1)


def test_llamaindex_ranks_the_text_with_the_metadata_mode_asked_for(fake_gguf):
    pytest.importorskip("llama_index.core")
    from llama_index.core.schema import MetadataMode

    from dear_local.integrations.llamaindex import DearLocalRerank

    reranker = fake_reranker()
    prompt = lambda: reranker.backend.detokenize(reranker.backend._seq)  # noqa: E731 - the last window's prompt
    DearLocalRerank(reranker).postprocess_nodes(llamaindex_nodes(), query_str=QUERY)
    assert "source: doc0" in prompt()  # EMBED, LlamaIndex's default for rerankers
    DearLocalRerank(reranker, metadata_mode=MetadataMode.NONE).postprocess_nodes(llamaindex_nodes(), query_str=QUERY)
    assert "source: doc0" not in prompt() and TEXTS[0] in prompt()


def test_llamaindex_async_postprocess(fake_gguf):
    pytest.importorskip("llama_index.core")
    from dear_local.integrations.llamaindex import DearLocalRerank

    postprocessor = DearLocalRerank(str(fake_gguf), top_n=1)
    out = asyncio.run(postprocessor.apostprocess_nodes(llamaindex_nodes(), query_str=QUERY))
    assert [(n.node.node_id, n.score) for n in out] == [("id4", 1.0)]


# -- Haystack -----------------------------------------------------------------------------------------


def haystack_docs():
    from haystack import Document

    return [Document(content=t, meta={"source": f"doc{i}"}) for i, t in enumerate(TEXTS)]


def test_haystack_ranker_returns_top_k_documents_best_first_with_scores(fake_gguf):
    pytest.importorskip("haystack")
    from dear_local.integrations.haystack import DearLocalRanker

    docs = haystack_docs()
    ranker = DearLocalRanker(str(fake_gguf), top_k=3)
    out = ranker.run(query=QUERY, documents=docs)["documents"]
    assert [d.content for d in out] == [TEXTS[i] for i in BEST_FIRST[:3]]
    assert [d.score for d in out] == SCORES[:3]
    assert [d.meta for d in out] == [{"source": f"doc{i}"} for i in BEST_FIRST[:3]]
    assert [d.id for d in out] == [docs[i].id for i in BEST_FIRST[:3]]
    assert all(d.score is None for d in docs)  # the input is not changed
    assert len(ranker.run(query=QUERY, documents=docs, top_k=1)["documents"]) == 1
    assert len(ranker.run(query=QUERY, documents=docs[:2], top_k=10)["documents"]) == 2


def test_haystack_empty_input_duplicates_and_bad_top_k(fake_gguf):
    pytest.importorskip("haystack")
    from dear_local.integrations.haystack import DearLocalRanker

    ranker = DearLocalRanker(fake_reranker())
    assert ranker.run(query=QUERY, documents=[]) == {"documents": []}
    docs = haystack_docs()
    twice = [docs[0], replace(docs[1], score=0.1), replace(docs[1], score=0.9), docs[2]]
    out = ranker.run(query=QUERY, documents=twice)["documents"]
    assert [d.content for d in out] == [TEXTS[2], TEXTS[1], TEXTS[0]]  # three distinct ids, ranked once each
    with pytest.raises(ValueError, match="top_k must be None or an int of at least 1, got 0"):
        ranker.run(query=QUERY, documents=docs, top_k=0)
    with pytest.raises(ValueError, match="top_k must be an int of at least 1, got None"):
        DearLocalRanker(fake_reranker(), top_k=None)


def test_haystack_opens_the_model_in_warm_up_and_serializes_as_its_name_and_options(fake_gguf, tmp_path):
    pytest.importorskip("haystack")
    from dear_local.errors import ModelNotFoundError
    from dear_local.integrations.haystack import DearLocalRanker

    missing = DearLocalRanker(str(tmp_path / "missing.gguf"))  # nothing opened yet
    with pytest.raises(ModelNotFoundError):
        missing.warm_up()

    ranker = DearLocalRanker(str(fake_gguf), top_k=2, decoding="first-token", n_threads=2)
    assert ranker.to_dict() == {
        "type": "dear_local.integrations.haystack.DearLocalRanker",
        "init_parameters": {"model": str(fake_gguf), "top_k": 2, "decoding": "first-token", "n_threads": 2},
    }
    again = DearLocalRanker.from_dict(ranker.to_dict())
    assert again.to_dict() == ranker.to_dict()
    opened = Reranker(str(fake_gguf), decoding="first-token", n_threads=2)
    assert DearLocalRanker(opened, top_k=2).to_dict() == ranker.to_dict()


def test_haystack_pipeline_runs_saves_and_loads_the_ranker(fake_gguf):
    pytest.importorskip("haystack")
    from haystack import Pipeline

    from dear_local.integrations.haystack import DearLocalRanker

    pipeline = Pipeline()
    pipeline.add_component("ranker", DearLocalRanker(str(fake_gguf), top_k=2))
    out = pipeline.run({"ranker": {"query": QUERY, "documents": haystack_docs()}})
    assert [(d.content, d.score) for d in out["ranker"]["documents"]] == [(TEXTS[4], 1.0), (TEXTS[3], 0.8)]
    # Haystack 3 loads classes only from modules the caller trusts (docs/clients.md says so)
    trust = {"allowed_modules": ["dear_local.integrations.haystack"]} if "allowed_modules" in signature(
        Pipeline.loads).parameters else {}
    loaded = Pipeline.loads(pipeline.dumps(), **trust)
    assert loaded.to_dict() == pipeline.to_dict()
    out = loaded.run({"ranker": {"query": QUERY, "documents": haystack_docs()[:3], "top_k": 1}})
    assert [d.content for d in out["ranker"]["documents"]] == [TEXTS[2]]


def test_haystack_async_run(fake_gguf):
    pytest.importorskip("haystack")
    from dear_local.integrations.haystack import DearLocalRanker

    ranker = DearLocalRanker(str(fake_gguf), top_k=1)
    asyncio.run(ranker.warm_up_async())
    out = asyncio.run(ranker.run_async(query=QUERY, documents=haystack_docs()))
    assert [(d.content, d.score) for d in out["documents"]] == [(TEXTS[4], 1.0)]
    ranker.close()


# -- a TEI client, unchanged, against dear-local serve ----------------------------------------------------


def hugging_face_tei_ranker():
    """Haystack's HuggingFaceTEIRanker: in huggingface-api-haystack since Haystack 3, in haystack-ai before."""
    try:
        from haystack_integrations.components.rankers.huggingface_api import HuggingFaceTEIRanker
    except ImportError:
        try:
            from haystack.components.rankers import HuggingFaceTEIRanker
        except ImportError:
            pytest.skip("neither huggingface-api-haystack nor a haystack-ai with HuggingFaceTEIRanker is installed")
    return HuggingFaceTEIRanker


@pytest.fixture(scope="module")
def tei_server():
    """`dear-local serve --api-key sk-local-test` over the fake model, on a free loopback port."""
    pytest.importorskip("fastapi")
    from dear_local.server import ServerSettings, create_app
    from dear_local.server.runner import background

    settings = ServerSettings(model="dear-8b-Q4_K_M.gguf", max_queue=16, timeout=60.0, api_key="sk-local-test")
    with background(create_app(settings, reranker=fake_reranker()), settings) as url:
        yield url


def test_haystacks_hugging_face_tei_ranker_works_unchanged_against_dear_local_serve(tei_server):
    HuggingFaceTEIRanker = hugging_face_tei_ranker()
    from haystack.utils import Secret

    ranker = HuggingFaceTEIRanker(url=tei_server, top_k=3, token=Secret.from_token("sk-local-test"))
    out = ranker.run(query=QUERY, documents=haystack_docs())["documents"]
    assert [d.content for d in out] == [TEXTS[i] for i in BEST_FIRST[:3]]
    assert [d.score for d in out] == SCORES[:3]
    assert [d.meta["source"] for d in out] == [f"doc{i}" for i in BEST_FIRST[:3]]

    out = asyncio.run(ranker.run_async(query=QUERY, documents=haystack_docs()[:2], top_k=5))["documents"]
    assert [d.content for d in out] == [TEXTS[1], TEXTS[0]]

    wrong_key = HuggingFaceTEIRanker(url=tei_server, token=Secret.from_token("wrong"), max_retries=1)
    with pytest.raises(RuntimeError, match="401"):
        wrong_key.run(query=QUERY, documents=haystack_docs())


def test_haystacks_tei_ranker_with_truncation_direction(tei_server):
    HuggingFaceTEIRanker = hugging_face_tei_ranker()
    from haystack.utils import Secret

    try:
        from haystack_integrations.components.rankers.huggingface_api import TruncationDirection
    except ImportError:
        from haystack.components.rankers.hugging_face_tei import TruncationDirection

    ranker = HuggingFaceTEIRanker(url=tei_server, token=Secret.from_token("sk-local-test"))
    out = ranker.run(query=QUERY, documents=haystack_docs(), truncation_direction=TruncationDirection.LEFT)
    assert [d.content for d in out["documents"]] == [TEXTS[i] for i in BEST_FIRST]


# -- the stand-in model (slow tier) -------------------------------------------------------------------

STANDIN_TEXTS = [
    "Paris is the capital and largest city of France.",
    "Bananas are yellow when ripe.",
    "The Eiffel Tower stands in Paris.",
    "Berlin is the capital of Germany.",
]


@pytest.fixture(scope="module")
def standin_reranker(standin_gguf):
    with Reranker(str(standin_gguf), n_ctx=2048) as reranker:
        yield reranker


def _a_ranking(scores: list[float], n: int) -> None:
    assert len(scores) == n
    assert all(0 < s <= 1 for s in scores) and scores == sorted(scores, reverse=True)


def test_langchain_compressor_on_the_standin(standin_reranker):
    pytest.importorskip("langchain_core")
    from langchain_core.documents import Document

    from dear_local.integrations.langchain import DearLocalRerank

    docs = [Document(page_content=t, metadata={"i": i}) for i, t in enumerate(STANDIN_TEXTS)]
    out = DearLocalRerank(standin_reranker, top_n=None).compress_documents(docs, "capital of France")
    assert sorted(d.metadata["i"] for d in out) == [0, 1, 2, 3]
    _a_ranking([d.metadata["relevance_score"] for d in out], 4)


def test_llamaindex_postprocessor_on_the_standin(standin_reranker):
    pytest.importorskip("llama_index.core")
    from llama_index.core.schema import NodeWithScore, TextNode

    from dear_local.integrations.llamaindex import DearLocalRerank

    nodes = [NodeWithScore(node=TextNode(text=t, id_=str(i))) for i, t in enumerate(STANDIN_TEXTS)]
    out = DearLocalRerank(standin_reranker, top_n=3).postprocess_nodes(nodes, query_str="capital of France")
    assert len({n.node.node_id for n in out}) == 3
    _a_ranking([n.score for n in out], 3)


def test_haystack_ranker_opens_the_standin_in_warm_up(standin_gguf):
    pytest.importorskip("haystack")
    from haystack import Document

    from dear_local.integrations.haystack import DearLocalRanker

    ranker = DearLocalRanker(str(standin_gguf), top_k=4, n_ctx=2048)
    ranker.warm_up()
    try:
        out = ranker.run(query="capital of France", documents=[Document(content=t) for t in STANDIN_TEXTS])
    finally:
        ranker.close()
    assert sorted(d.content for d in out["documents"]) == sorted(STANDIN_TEXTS)
    _a_ranking([d.score for d in out["documents"]], 4)
