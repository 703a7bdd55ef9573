"""Ranking a slice's queries with any backend, as records: the runs the reference and the check compare.

The transformers reference and every llama.cpp quant go through ``run_queries``,
so both sides of the check produce records of one shape.
"""

from __future__ import annotations

from typing import Callable

from dear_local.backends.base import Backend
from dear_local.contract import Profile, first_window
from dear_local.engine import Ranking, prompt_ids, rank_documents


def vocab_fingerprint(backend: Backend) -> dict:
    """A hash of the vocabulary's token texts, to tell a GGUF from another model's."""
    import hashlib

    h = hashlib.sha256()
    for t in range(backend.n_vocab):
        h.update(backend.token_text(t).encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return {"size": backend.n_vocab, "sha256": h.hexdigest()}


def first_window_logprobs(
    backend: Backend, profile: Profile, query: str, passages: list[str], ranking: Ranking | None = None
) -> list[float]:
    """First-token log-probabilities of every id in a query's first window.

    Pass the query's ``ranking`` right after it was made: when its last window
    is the first window (a query with a single window), the prompt the backend
    still holds is reused instead of evaluated a second time.
    """
    import math

    from dear_local.backends.base import capabilities_of
    from dear_local.decoding import first_token
    from dear_local.decoding.remote import remote_first_token

    window = first_window(passages, profile.window)
    n = len(window)
    ids = prompt_ids(backend, profile, query, window)
    if not capabilities_of(backend).local_evaluation:  # an inference server: log-probabilities by request
        _, probs = remote_first_token(backend, profile.tmpl, ids, n)
        return [math.log(max(p, 1e-300)) for p in probs]
    cached = ranking is not None and bool(ranking.windows) and ranking.windows[-1].prompt_ids == ids
    _, probs = first_token(backend, profile.tmpl, ids, n, prompt_cached=cached)
    return [math.log(max(p, 1e-300)) for p in probs]


def query_record(backend: Backend, profile: Profile, query, ranking: Ranking, logprobs: list[float]) -> dict:
    return {
        "type": "query",
        "qid": query.qid,
        "order": [query.docids[i] for i in ranking.order],
        "windows": [w.record(tokens=True) for w in ranking.windows],
        "first_token_logprobs": logprobs,
    }


def run_queries(
    backend: Backend, profile: Profile, eval_slice, on_query: Callable[[dict], None] | None = None
) -> list[dict]:
    """Rank every query of a slice with ``backend``; one record per query."""
    records = []
    for q in eval_slice.queries:
        ranking = rank_documents(backend, profile, q.text, list(q.passages))
        logprobs = first_window_logprobs(backend, profile, q.text, list(q.passages), ranking)
        rec = query_record(backend, profile, q, ranking, logprobs)
        records.append(rec)
        if on_query is not None:
            on_query(rec)
    return records
