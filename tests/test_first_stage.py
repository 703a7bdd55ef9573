"""DeAR's dual stage: a pointwise ranker (the tiny DeAR-P-shaped model) scores every candidate, the
listwise model (the stand-in) reorders its top ``listwise_depth``; and the pointwise ranker alone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dear_local.contract.pointwise import probability
from dear_local.contract.titles import split_title
from optional import needs

pytestmark = needs("torch", "transformers", "gguf", "llama_cpp")


def _noveleval(n_queries: int = 2, n_passages: int = 12):
    from dear_local_convert.slices import load_slice

    return [(q.text, list(q.passages)) for q in load_slice("noveleval", queries=n_queries, passages=n_passages).queries]


@pytest.fixture(scope="module")
def pointwise_alone(tiny_pointwise_gguf):
    from dear_local import Reranker

    with Reranker(None, first_stage=str(tiny_pointwise_gguf)) as r:
        yield r


def test_a_pointwise_ranker_alone_orders_by_its_probabilities(pointwise_alone, tiny_pointwise_gguf):
    from dear_local.backends.pointwise import PointwiseModel

    with PointwiseModel(tiny_pointwise_gguf, flash_attn=True) as pm:  # as Reranker opens it, flash attention on
        for query, passages in _noveleval():
            resp = pointwise_alone.rerank(query, passages)
            logits = pm.score(query, passages)
            assert [r.index for r in resp] == sorted(range(len(passages)), key=lambda i: (-float(logits[i]), i))
            assert [r.score for r in resp] == pytest.approx([probability(float(logits[r.index])) for r in resp], abs=1e-6)
            assert resp.ranking.score_kind == "pointwise-probability" and resp.windows == []


def test_a_document_gets_the_same_probability_whatever_its_companions(pointwise_alone):
    """The property a threshold needs (Open WebUI, Dify, RAGFlow): one (query, document) pair, one score,
    in requests of other sizes and other companions, in any position."""
    rng = np.random.default_rng(3)
    for query, passages in _noveleval(2, 20):
        target = passages[0]
        seen = []
        for size in (1, 3, 9, 17):
            others = [passages[i] for i in rng.choice(np.arange(1, len(passages)), size - 1, replace=False)]
            docs = others[: size // 2] + [target] + others[size // 2:]
            resp = pointwise_alone.rerank(query, docs)
            seen.append(next(r.score for r in resp if r.text == target and r.index == size // 2))
        assert max(seen) - min(seen) <= 1e-6, seen


def test_the_listwise_model_reorders_only_the_first_stages_top(standin_gguf, tiny_pointwise_gguf, pointwise_alone):
    from dear_local import Reranker

    with Reranker(str(standin_gguf), first_stage=str(tiny_pointwise_gguf), listwise_depth=6, window=4, stride=2,
                  decoding="first-token") as both:
        for query, passages in _noveleval():
            first = pointwise_alone.rerank(query, passages)
            resp = both.rerank(query, passages)
            top = [r.index for r in first]
            assert [r.index for r in resp][6:] == top[6:]  # below the listwise depth: the first stage's order
            assert sorted([r.index for r in resp][:6]) == sorted(top[:6])
            assert [(w.start, w.end) for w in resp.windows] == [(2, 6), (0, 4)]  # back to front over the top 6
            assert {r.index: r.score for r in resp} == {r.index: r.score for r in first}  # the pointwise probabilities
        _served_with_both_stages(both, query, passages)


def _served_with_both_stages(both, query, passages):
    """Over HTTP, the models list, /info and meta name both stages, and the tokens count both."""
    import httpx

    from dear_local.server import ServerSettings, create_app
    from dear_local.server.runner import background

    settings = ServerSettings(model=both.model, port=0)
    with background(create_app(settings, reranker=both), settings) as url, httpx.Client(base_url=url, timeout=120) as c:
        card = c.get("/v1/models").json()["data"][0]
        info = c.get("/info").json()
        meta = c.post("/v1/rerank", json={"query": query, "documents": passages}).json()["meta"]
    listwise = {"template": both.profile.template, "decoding": "first-token", "window": 4, "stride": 2,
                "first_stage": "dear-p", "listwise_depth": 6}
    assert {k: card[k] for k in listwise} == {k: info[k] for k in listwise} == listwise
    assert info["max_batch_tokens"] == both.backend.n_ctx
    assert (meta["template"], meta["decoding"], meta["first_stage"]) == (both.profile.template, "first-token", "dear-p")
    windows = sum(len(w.prompt_ids) for w in both.rerank(query, passages).windows)
    pairs = sum(len(both.first_stage.pair_ids(query, text, title)) for title, text in map(split_title, passages))
    assert meta["tokens"]["input_tokens"] == windows + pairs  # the first stage's pairs count too


def _dl19_files(shared_dir, out, n_queries=2, n_hits=10):
    entries = json.loads((shared_dir / "data" / "dl19" / "retrieve_results_dl19.json").read_text(encoding="utf-8"))
    run, corpus, rankgpt = out / "run.trec", out / "corpus.tsv", out / "rankgpt.jsonl"
    docs = {}
    with open(run, "w") as f, open(rankgpt, "w", encoding="utf-8") as g:
        for e in entries[:n_queries]:
            for h in e["hits"][:n_hits]:
                f.write(f"{h['qid']} Q0 {h['docid']} {h['rank']} {h['score']} bm25\n")
                docs[h["docid"]] = h["content"].replace("\t", " ").replace("\n", " ")
            g.write(json.dumps({"query": e["query"], "hits": e["hits"][:n_hits]}) + "\n")
    corpus.write_text("".join(f"{d}\t{t}\n" for d, t in docs.items()), encoding="utf-8")
    return run, shared_dir / "data" / "dl19" / "topics.dl19-passage.txt", corpus, rankgpt


def _trec(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        qid, _q0, docid, _rank, _score, _tag = line.split()
        out.setdefault(qid, []).append(docid)
    return out


def test_the_cli_runs_both_stages_on_a_trec_run_and_a_jsonl_alike_and_resumes(
    cli, shared_dir, standin_gguf, tiny_pointwise_gguf, tmp_path, monkeypatch
):
    import dear_local.batch as batch

    run, topics, corpus, rankgpt = _dl19_files(shared_dir, tmp_path)
    stages = ["--first-stage", str(tiny_pointwise_gguf), "-m", str(standin_gguf), "--window", "4", "--stride", "2",
              "--decoding", "first-token"]
    via_run = ["--run", str(run), "--topics", str(topics), "--corpus", str(corpus), "--format", "trec"]
    code, whole, err = cli("rerank", *stages, "--listwise-depth", "4", *via_run)
    assert code == 0, err
    ranked = _trec(whole)
    assert len(ranked) == 2 and all(len(d) == 10 for d in ranked.values())
    code, stdout, err = cli("rerank", *stages, "--listwise-depth", "4", "--jsonl", str(rankgpt), "--format", "trec")
    assert code == 0 and _trec(stdout) == ranked, err
    # Ctrl-C as the second query starts, then a resume with another listwise depth, then the same job
    out = tmp_path / "both.trec"
    real, calls = batch._rerank_one, []

    def one(*a, **kw):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(*a, **kw)

    with monkeypatch.context() as m:
        m.setattr(batch, "_rerank_one", one)
        code, _, err = cli("rerank", *stages, "--listwise-depth", "4", *via_run, "--out", str(out))
    assert code == 130, err
    code, _, err = cli("rerank", *stages, "--listwise-depth", "2", *via_run, "--out", str(out))
    assert code != 0 and "--listwise-depth" in err and err.count("\n") == 1, err
    code, _, err = cli("rerank", *stages, "--listwise-depth", "4", *via_run, "--out", str(out))
    assert code == 0 and "1 of 2 queries were already written" in err, err
    assert out.read_text() == whole
    # the pointwise ranker alone, no --model: scores fall with rank
    code, stdout, err = cli("rerank", "--first-stage", str(tiny_pointwise_gguf), "--jsonl", str(rankgpt), "--format", "json")
    assert code == 0, err
    for record in (json.loads(line) for line in stdout.splitlines()):
        scores = [r["score"] for r in record["results"]]
        assert scores == sorted(scores, reverse=True)


@needs("fastapi", "httpx")
def test_serve_with_a_first_stage_answers_pointwise_probabilities_in_every_shape(tiny_pointwise_gguf):
    """`serve --first-stage` with no listwise model: Cohere and TEI shapes, meta.scores names the kind, and a
    document keeps its score in a request with other companions."""
    import httpx

    from dear_local.run_options import RunOptions
    from dear_local.server import ServerSettings, create_app
    from dear_local.server.runner import background

    settings = ServerSettings(model=None, port=0, run=RunOptions(first_stage=str(tiny_pointwise_gguf)))
    assert settings.model_name == tiny_pointwise_gguf.stem
    (query, passages), = _noveleval(1, 8)
    app = create_app(settings)
    try:
        with background(app, settings) as url, httpx.Client(base_url=url, timeout=120) as client:
            a = client.post("/v1/rerank", json={"query": query, "documents": passages})
            b = client.post("/v2/rerank", json={"query": query, "documents": passages[3:] + passages[:1]})
            tei = client.post("/rerank", json={"query": query, "texts": passages})
            assert a.status_code == b.status_code == tei.status_code == 200, (a.text, b.text, tei.text)
            a, b, tei = a.json(), b.json(), tei.json()
            assert a["meta"]["scores"] == b["meta"]["scores"] == "pointwise-probability"
            score_a = {r["index"]: r["relevance_score"] for r in a["results"]}
            score_b = {r["index"]: r["relevance_score"] for r in b["results"]}
            assert abs(score_a[0] - score_b[len(passages) - 3]) <= 1e-6  # passages[0], last in the second request
            assert {r["index"]: r["score"] for r in tei} == pytest.approx(score_a, abs=1e-6)
            # with no listwise model, what is served is the pointwise ranker's, not a listwise profile's
            assert (a["meta"]["template"], a["meta"]["decoding"], a["meta"]["first_stage"]) == ("dear-p", "pointwise", "dear-p")
            first = app.state.service.reranker.first_stage
            pairs = sum(len(first.pair_ids(query, text, title)) for title, text in map(split_title, passages))
            assert a["meta"]["tokens"]["input_tokens"] == pairs  # its pairs' tokens; there are no windows
            card, info = client.get("/v1/models").json()["data"][0], client.get("/info").json()
            pointwise = {"template": "dear-p", "decoding": "pointwise", "window": None, "stride": None,
                         "first_stage": "dear-p", "listwise_depth": None}
            assert {k: card[k] for k in pointwise} == {k: info[k] for k in pointwise} == pointwise
            assert info["max_input_length"] == 228 and info["max_batch_tokens"] == 8 * 228
    finally:
        app.state.service.reranker.close()
