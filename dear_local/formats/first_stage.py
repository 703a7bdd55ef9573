"""A first-stage run, its topics and a corpus, turned into rerank requests.

``dear-local rerank --run bm25.trec --topics topics.tsv --corpus corpus.tsv --depth 100`` reads
the run (``formats.trec``), keeps each query's best ``depth`` documents, takes the query texts
from the topics and the passage texts from the corpus (``formats.collection``; one streaming
pass that keeps only the documents the run needs). Candidates keep the run's order.

Queries the topics lack and documents the corpus lacks are errors that name them; with
``skip_missing`` they are left out instead and reported through ``warn``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import UserInputError
from .request import Request
from .collection import read_corpus, read_topics
from .lines import check_input
from .trec import read_run

DEFAULT_DEPTH = 100


def _examples(items: list[str], k: int = 5) -> str:
    shown = ", ".join(items[:k])
    return shown + (", ..." if len(items) > k else "")


def _is_stdin(path) -> bool:
    """True for the names of standard input: ``-``, ``/dev/stdin``, ``/dev/fd/0``, ``/proc/self/fd/0``."""
    return str(path) in ("-", "/dev/stdin", "/dev/fd/0", "/proc/self/fd/0")


def requests_from_run(
    run_path: str | Path,
    topics_path: str | Path,
    corpus_path: str | Path,
    depth: int = DEFAULT_DEPTH,
    *,
    skip_missing: bool = False,
    warn: Callable[[str], None] = lambda _msg: None,
) -> list[Request]:
    """One ``Request`` per query of the run, in the run's query order, best ``depth`` documents each.

    Raises ``UserInputError`` for a depth below 1, unreadable files, run queries missing from
    the topics or run documents missing from the corpus (unless ``skip_missing``), and for a
    run left with no documents at all.
    """
    if depth < 1:
        raise UserInputError(f"--depth must be at least 1, got {depth}")
    # Files, pipes (``<(zcat run.gz)``, FIFOs, /dev/stdin) and ``-`` for stdin: each is read once.
    from_stdin = [flag for flag, path in (("--run", run_path), ("--topics", topics_path), ("--corpus", corpus_path))
                  if _is_stdin(path)]
    if len(from_stdin) > 1:
        raise UserInputError(
            f"{' and '.join(from_stdin)} each read standard input (-, /dev/stdin or /dev/fd/0), which holds one file; "
            "give at most one of them as stdin, the others as files or pipes"
        )
    for path in (run_path, topics_path, corpus_path):
        check_input(path)
    run = {qid: entries[:depth] for qid, entries in read_run(run_path).items()}
    topics = read_topics(topics_path)

    no_topic = [qid for qid in run if qid not in topics]
    if no_topic:
        message = (
            f"{len(no_topic)} of the {len(run)} queries in {run_path} are not in {topics_path} "
            f"({_examples(no_topic)})"
        )
        if not skip_missing:
            raise UserInputError(f"{message}; pass the topics of the run's queries, or --skip-missing to leave them out")
        warn(f"{message}; left out")
        run = {qid: entries for qid, entries in run.items() if qid in topics}

    wanted = {e.docid for entries in run.values() for e in entries}
    texts = read_corpus(corpus_path, wanted)
    absent = sorted(wanted - texts.keys())
    if absent:
        message = (
            f"{len(absent)} of the {len(wanted)} documents the run needs are not in {corpus_path} "
            f"({_examples(absent)})"
        )
        if not skip_missing:
            raise UserInputError(
                f"{message}; pass the corpus the run was retrieved from, or --skip-missing to rerank without them"
            )
        warn(f"{message}; reranking without them")

    requests = []
    for qid, entries in run.items():
        kept = [e.docid for e in entries if e.docid in texts]
        if not kept:
            warn(f"query {qid} has none of its documents in {corpus_path}; left out")
            continue
        requests.append(Request(qid=qid, query=topics[qid], documents=[texts[d] for d in kept], docids=kept))
    if not requests:
        raise UserInputError(f"no query of {run_path} is left to rerank; check the run, topics and corpus belong together")
    return requests
