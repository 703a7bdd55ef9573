"""``dear-local evaluate``: nDCG@1/5/10, MAP@100 and Recall@100 of TREC runs, side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import typer

from ..terminal import printable
from .messages import warn


def evaluate(
    runs: List[Path] = typer.Argument(..., help="TREC run files (qid Q0 docid rank score tag), e.g. the first-stage run and the reranked one."),
    qrels: Path = typer.Option(..., "--qrels", help="TREC qrels (qid iteration docid grade)."),
    per_query: bool = typer.Option(False, "--per-query", help="Also show every query's metrics."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    relevance_level: int = typer.Option(
        1, "--relevance-level", "-l", help="Lowest grade MAP and recall count as relevant (trec_eval -l; Pyserini uses 2 on TREC DL)."
    ),
) -> None:
    """Score TREC runs against qrels with trec_eval's measures (through pytrec_eval).

    Needs pytrec-eval-terrier (the `convert` extra); torch is not needed.
    """
    from ..evaluation import MEASURES, evaluate_run
    from ..formats.trec import read_qrels, read_run, run_scores

    judgments = read_qrels(qrels)
    results = [evaluate_run(str(path), run_scores(read_run(path)), judgments, relevance_level) for path in runs]
    for r in results:
        if r.unjudged:
            warn(
                f"{len(r.unjudged)} queries of {r.name} have no judgments in {qrels} and are left out "
                f"(e.g. {', '.join(r.unjudged[:5])})"
            )
        if r.unretrieved:
            warn(
                f"{r.name} has no results for {len(r.unretrieved)} judged queries; they are left out "
                f"of its mean, as trec_eval does without -c (e.g. {', '.join(r.unretrieved[:5])})"
            )
    labels = [label for _, label in MEASURES]
    if as_json:
        typer.echo(json.dumps({
            "qrels": str(qrels),
            "relevance_level": relevance_level,
            "measures": labels,
            "runs": [
                {
                    "run": r.name,
                    "queries": len(r.per_query),
                    "mean": r.mean,
                    "unjudged": r.unjudged,
                    "unretrieved": r.unretrieved,
                    **({"per_query": r.per_query} if per_query else {}),
                }
                for r in results
            ],
        }, indent=2))
        return
    width = max(len("run"), *(len(printable(r.name)) for r in results))
    header = f"{'run':<{width}}  {'queries':>7}  " + "  ".join(f"{label:>{max(len(label), 6)}}" for label in labels)

    def row(first: str, count: str, values: dict[str, float]) -> str:
        return f"{first:<{width}}  {count:>7}  " + "  ".join(
            f"{values[label]:>{max(len(label), 6)}.4f}" for label in labels
        )

    if per_query:
        qwidth = max(len("qid"), *(len(printable(q)) for r in results for q in r.per_query))
        typer.echo(f"{'qid':<{qwidth}}  " + header)
        qids = list(dict.fromkeys(q for r in results for q in r.per_query))
        for q in qids:
            for r in results:
                if q in r.per_query:
                    typer.echo(f"{printable(q):<{qwidth}}  " + row(printable(r.name), "", r.per_query[q]))
        typer.echo("")
    typer.echo(header)
    for r in results:
        typer.echo(row(printable(r.name), str(len(r.per_query)), r.mean))


def register(app: typer.Typer) -> None:
    app.command()(evaluate)
