"""Fixed eval slices: the queries, candidate passages and judgments a reference and a check run on.

Three slices are known:

- ``noveleval`` (the default): NovelEval-2306, 21 queries with 20 judged passages each, one
  window per query. Candidates are in the search engine's order.
- ``dl19-top20``: TREC DL19 passage, 43 queries, the BM25 top-20 from rank_llm's stored run.
- ``dl19-top100``: the same run's top-100, ranked with sliding windows.

Every source file is pinned by URL and sha256. A file is read from the offline mirror named by
``DEAR_LOCAL_DATA`` when it is set (laid out like ``noveleval/queries.tsv``,
``dl19/qrels.dl19-passage.txt``), otherwise from the download cache under
``DEAR_LOCAL_HOME/data``, downloading it first when needed. Either way its sha256 and the
expected counts are checked before anything is returned.

Passage text is kept exactly as published, MS MARCO's own mojibake ("Â°F") included, so scores
stay comparable with published numbers.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping

from dear_local.errors import DataError, UserInputError
from dear_local.formats.request import Request

from dear_local_convert.slice_files import (
    DL19_QRELS,
    DL19_RUN,
    DL19_TOPICS,
    NOVELEVAL_CORPUS,
    NOVELEVAL_QRELS,
    NOVELEVAL_QUERIES,
    SourceFile,
    combined_sha256,
    fetch,
)

__all__ = [
    "DEFAULT_SLICE",
    "Query",
    "Slice",
    "SliceInfo",
    "SourceFile",
    "list_slices",
    "load_slice",
    "slice_sources",
]

DEFAULT_SLICE = "noveleval"

# Expected contents, checked on every load.
_NOVELEVAL_N_QUERIES = 21
_NOVELEVAL_N_PASSAGES = 20
_NOVELEVAL_GRADES = {0: 290, 1: 40, 2: 90}
_DL19_N_QUERIES = 43
_DL19_N_HITS = 100
_DL19_N_JUDGMENTS = 9260


@dataclass(frozen=True)
class Query:
    """One query and its candidates, in first-stage order (best first); ``docids[i]`` names ``passages[i]``.

    The eval slices' own record, immutable like the :class:`Slice` that holds it (references record
    the slice and checks compare it). The runtime's :class:`dear_local.formats.request.Request` holds the
    same things for a query to rerank, mutable and named as its files name them; :meth:`to_request`
    turns one into the other.
    """

    qid: str
    text: str
    docids: tuple[str, ...]
    passages: tuple[str, ...]

    def to_request(self) -> Request:
        """This query as a :class:`~dear_local.formats.request.Request` for the runtime (a ``Reranker``,
        ``run_batch``): ``text`` as ``query``, ``passages`` as ``documents``, each a new list."""
        return Request(qid=self.qid, query=self.text, documents=list(self.passages), docids=list(self.docids))


@dataclass(frozen=True)
class Slice:
    """A loaded eval slice, possibly cut to its first queries and passages.

    ``qrels`` holds every judgment for the slice's queries (``qrels[qid][docid] = grade``),
    including judged passages outside the candidate list, as trec_eval expects.
    ``sha256`` identifies the slice as cut: the name, the pinned source files, the number of
    queries and the passages per query. References record it and checks compare it.
    """

    name: str
    source_sha256: str
    passages_per_query: int
    queries: tuple[Query, ...]
    qrels: Mapping[str, Mapping[str, int]] = field(repr=False)

    @property
    def sha256(self) -> str:
        payload = json.dumps(
            {
                "slice": self.name,
                "sources": self.source_sha256,
                "queries": len(self.queries),
                "passages_per_query": self.passages_per_query,
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    @property
    def n_passages(self) -> int:
        """The number of candidate passages over all queries."""
        return sum(len(q.docids) for q in self.queries)

    def cut(self, queries: int | None = None, passages: int | None = None) -> Slice:
        """The first ``queries`` queries, each with its first ``passages`` candidates."""
        n_q = _check_cut("queries", queries, len(self.queries), self.name)
        n_p = _check_cut("passages", passages, self.passages_per_query, self.name)
        kept = tuple(
            replace(q, docids=q.docids[:n_p], passages=q.passages[:n_p]) for q in self.queries[:n_q]
        )
        qrels = {q.qid: dict(self.qrels.get(q.qid, {})) for q in kept}
        return Slice(self.name, self.source_sha256, n_p, kept, qrels)

    def initial_run(self) -> dict[str, list[str]]:
        """The candidates in their given (first-stage) order, as a run ``{qid: [docids]}``."""
        return {q.qid: list(q.docids) for q in self.queries}


@dataclass(frozen=True)
class SliceInfo:
    """What ``list_slices`` says about a slice, without loading it."""

    name: str
    description: str
    queries: int
    passages_per_query: int
    sources: tuple[SourceFile, ...]


@dataclass(frozen=True)
class _Spec:
    info: SliceInfo
    build: Callable[[Mapping[str, Path]], tuple[list[Query], dict[str, dict[str, int]]]]


def _check_cut(what: str, n: int | None, available: int, name: str) -> int:
    if n is None:
        return available
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserInputError(f"the number of {what} to keep must be a positive integer, not {n!r}")
    if n > available:
        raise UserInputError(
            f"slice {name!r} has only {available} {what}{' per query' if what == 'passages' else ''}; "
            f"ask for at most {available}"
        )
    return n


def _bad(src: SourceFile, what: str) -> DataError:
    return DataError(
        f"{src.relpath} passed its checksum but {what}; this is a dear-local bug, please report it"
    )


# ---------------------------------------------------------------------------------------------
# Parsers


def _read_tsv(path: Path) -> list[list[str]]:
    # The files are CSV-quoted: splitting on the first tab corrupts passages with quotes and tabs.
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f, delimiter="\t"))


def _read_qrels(path: Path, src: SourceFile) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 4:
                raise _bad(src, f"has a line that is not 'qid iter docid grade': {line!r}")
            qid, _, docid, grade = parts
            qrels.setdefault(qid, {})[docid] = int(grade)
    return qrels


def _build_noveleval(paths: Mapping[str, Path]) -> tuple[list[Query], dict[str, dict[str, int]]]:
    q_src, c_src, r_src = NOVELEVAL_QUERIES, NOVELEVAL_CORPUS, NOVELEVAL_QRELS
    rows = _read_tsv(paths[q_src.relpath])
    if any(len(r) != 2 for r in rows):
        raise _bad(q_src, "has rows that are not 'qid<TAB>query'")
    texts = dict(rows)
    if len(texts) != _NOVELEVAL_N_QUERIES:
        raise _bad(q_src, f"holds {len(texts)} queries, not {_NOVELEVAL_N_QUERIES}")

    rows = _read_tsv(paths[c_src.relpath])
    if any(len(r) != 2 for r in rows):
        raise _bad(c_src, "has rows that are not 'docid<TAB>content'")
    corpus = dict(rows)
    expected = _NOVELEVAL_N_QUERIES * _NOVELEVAL_N_PASSAGES
    if len(corpus) != expected:
        raise _bad(c_src, f"holds {len(corpus)} passages, not {expected}")

    qrels = _read_qrels(paths[r_src.relpath], r_src)
    grades: dict[int, int] = {}
    for judged in qrels.values():
        for g in judged.values():
            grades[g] = grades.get(g, 0) + 1
    if grades != _NOVELEVAL_GRADES:
        raise _bad(r_src, f"has grade counts {grades}, not {_NOVELEVAL_GRADES}")

    queries = []
    for qid, text in texts.items():
        docids = tuple(f"{qid}-{j}" for j in range(_NOVELEVAL_N_PASSAGES))
        missing = [d for d in docids if d not in corpus or d not in qrels.get(qid, {})]
        if missing:
            raise _bad(c_src, f"lacks text or judgments for {missing}")
        queries.append(Query(qid, text, docids, tuple(corpus[d] for d in docids)))
    return queries, qrels


def _build_dl19(paths: Mapping[str, Path]) -> tuple[list[Query], dict[str, dict[str, int]]]:
    run_src, t_src, r_src = DL19_RUN, DL19_TOPICS, DL19_QRELS
    with open(paths[run_src.relpath], encoding="utf-8") as f:
        entries = json.load(f)
    if len(entries) != _DL19_N_QUERIES:
        raise _bad(run_src, f"holds {len(entries)} queries, not {_DL19_N_QUERIES}")

    rows = _read_tsv(paths[t_src.relpath])
    topics = dict(rows)
    if len(topics) != _DL19_N_QUERIES:
        raise _bad(t_src, f"holds {len(topics)} topics, not {_DL19_N_QUERIES}")

    qrels = _read_qrels(paths[r_src.relpath], r_src)
    n_judged = sum(len(j) for j in qrels.values())
    if n_judged != _DL19_N_JUDGMENTS:
        raise _bad(r_src, f"holds {n_judged} judgments, not {_DL19_N_JUDGMENTS}")

    queries = []
    for entry in entries:
        hits = entry["hits"]
        if len(hits) != _DL19_N_HITS:
            raise _bad(run_src, f"has {len(hits)} hits for {entry['query']!r}, not {_DL19_N_HITS}")
        qid = str(hits[0]["qid"])
        if any(str(h["qid"]) != qid for h in hits) or [h["rank"] for h in hits] != list(
            range(1, _DL19_N_HITS + 1)
        ):
            raise _bad(run_src, f"has mixed qids or out-of-order ranks for query {qid}")
        if topics.get(qid) != entry["query"] or qid not in qrels:
            raise _bad(run_src, f"has query {qid} with no matching topic or judgments")
        docids = tuple(str(h["docid"]) for h in hits)
        if len(set(docids)) != len(docids):
            raise _bad(run_src, f"repeats a docid for query {qid}")
        queries.append(Query(qid, entry["query"], docids, tuple(h["content"] for h in hits)))
    return queries, {q.qid: qrels[q.qid] for q in queries}


_NOVELEVAL_SOURCES = (NOVELEVAL_QUERIES, NOVELEVAL_CORPUS, NOVELEVAL_QRELS)
_DL19_SOURCES = (DL19_RUN, DL19_TOPICS, DL19_QRELS)

_SPECS: Mapping[str, _Spec] = {
    "noveleval": _Spec(
        SliceInfo(
            "noveleval",
            "NovelEval-2306: 21 queries x 20 judged passages, one window each",
            _NOVELEVAL_N_QUERIES,
            _NOVELEVAL_N_PASSAGES,
            _NOVELEVAL_SOURCES,
        ),
        _build_noveleval,
    ),
    "dl19-top20": _Spec(
        SliceInfo(
            "dl19-top20",
            "TREC DL19 passage: 43 queries, BM25 top-20, one window each",
            _DL19_N_QUERIES,
            20,
            _DL19_SOURCES,
        ),
        _build_dl19,
    ),
    "dl19-top100": _Spec(
        SliceInfo(
            "dl19-top100",
            "TREC DL19 passage: 43 queries, BM25 top-100, sliding windows",
            _DL19_N_QUERIES,
            _DL19_N_HITS,
            _DL19_SOURCES,
        ),
        _build_dl19,
    ),
}


# ---------------------------------------------------------------------------------------------
# Public functions


def list_slices() -> list[SliceInfo]:
    """Every known slice, the default first."""
    return [spec.info for spec in _SPECS.values()]


def slice_sources(name: str) -> tuple[SourceFile, ...]:
    """The pinned source files of slice ``name``."""
    return _spec(name).info.sources


def _spec(name: str) -> _Spec:
    try:
        return _SPECS[name]
    except KeyError:
        raise UserInputError(
            f"unknown eval slice {name!r}; choose one of: {', '.join(_SPECS)}"
        ) from None


def load_slice(
    name: str = DEFAULT_SLICE, *, queries: int | None = None, passages: int | None = None
) -> Slice:
    """Load slice ``name``, checked, cut to its first ``queries`` queries and ``passages`` passages.

    Raises ``DataError`` when a file is missing, does not match its pinned sha256, or does not
    hold the expected counts, and ``UserInputError`` for an unknown name or a bad cut.
    """
    spec = _spec(name)
    info = spec.info
    paths = {src.relpath: fetch(src) for src in info.sources}
    parsed, qrels = spec.build(paths)
    n = info.passages_per_query
    full = Slice(
        name=info.name,
        source_sha256=combined_sha256(info.sources),
        passages_per_query=n,
        queries=tuple(replace(q, docids=q.docids[:n], passages=q.passages[:n]) for q in parsed),
        qrels=qrels,
    )
    return full.cut(queries, passages)
