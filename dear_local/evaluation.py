"""Retrieval metrics of TREC runs against qrels, through pytrec_eval (trec_eval's own code).

``dear-local evaluate`` reports, per run:

- nDCG@1, @5, @10 (trec_eval ``ndcg_cut``: the gain is the grade, unjudged documents count 0,
  the ideal ranking is built from every judgment of the query);
- MAP@100 (``map_cut.100``: average precision over the first 100 documents, over all relevant
  documents of the query);
- Recall@100 (``recall.100``).

As in trec_eval, a document is relevant when its grade is at least 1 (trec_eval's ``-l``, which
``relevance_level`` changes), documents are ordered by score (trec_eval breaks ties by docid),
and only queries that are both in the run and judged in the qrels are evaluated; the mean is
over those. The queries left out either way are reported.

pytrec_eval comes from the PyPI package ``pytrec-eval-terrier``, with the ``check`` extra; it
is imported only when metrics are computed, so the rest of dear-local works without it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

from .errors import UserInputError, missing_extra

# (pytrec_eval result key, the name shown to users)
MEASURES = (
    ("ndcg_cut_1", "nDCG@1"),
    ("ndcg_cut_5", "nDCG@5"),
    ("ndcg_cut_10", "nDCG@10"),
    ("map_cut_100", "MAP@100"),
    ("recall_100", "Recall@100"),
)
_TREC_EVAL_MEASURES = {"ndcg_cut.1,5,10", "map_cut.100", "recall.100"}


def trec_eval(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    measures: set[str],
    relevance_level: int = 1,
) -> dict[str, dict[str, float]]:
    """pytrec_eval's per-query results: ``{qid: {measure_key: value}}`` for the judged run queries.

    ``qrels`` is ``{qid: {docid: grade}}``, ``run`` is ``{qid: {docid: score}}`` and ``measures``
    are trec_eval measure names such as ``"ndcg_cut.10"``; ``relevance_level`` is the lowest grade
    that counts as relevant (trec_eval's ``-l``; nDCG uses the grades themselves). Raises ``MissingExtraError`` naming
    the ``check`` extra when pytrec-eval-terrier is not installed.
    """
    try:
        import pytrec_eval
    except ImportError:
        raise missing_extra("pytrec-eval-terrier", "check") from None
    qrels = {str(q): {str(d): int(g) for d, g in docs.items()} for q, docs in qrels.items()}
    run = {str(q): {str(d): float(s) for d, s in docs.items()} for q, docs in run.items()}
    return pytrec_eval.RelevanceEvaluator(qrels, set(measures), relevance_level=relevance_level).evaluate(run)


@dataclass(frozen=True)
class RunMetrics:
    """The metrics of one run: per query and their mean, keyed by the names in ``MEASURES``.

    ``unjudged`` lists the run's queries the qrels do not judge (left out); ``unretrieved`` the
    judged queries the run lacks (left out too; trec_eval's ``-c`` would count them as 0).
    """

    name: str
    per_query: dict[str, dict[str, float]]
    mean: dict[str, float]
    unjudged: list[str]
    unretrieved: list[str]

    def as_dict(self) -> dict:
        return asdict(self)


def evaluate_run(
    name: str,
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    relevance_level: int = 1,
) -> RunMetrics:
    """nDCG@1/5/10, MAP@100 and Recall@100 of ``run`` (``{qid: {docid: score}}``) against ``qrels``.

    ``relevance_level`` is the lowest grade MAP and recall count as relevant (trec_eval's ``-l``;
    Pyserini's TREC DL tables use 2). Raises ``UserInputError`` when no query of the run is
    judged in the qrels, or for a relevance level below 1.
    """
    if relevance_level < 1:
        raise UserInputError(f"--relevance-level must be at least 1, got {relevance_level}")
    judged = {q for q, docs in qrels.items() if docs}
    evaluated = [q for q in run if q in judged]
    if not evaluated:
        raise UserInputError(
            f"no query of {name} is judged in the qrels; pass the qrels of the run's topics"
        )
    raw = trec_eval(
        {q: qrels[q] for q in evaluated}, {q: run[q] for q in evaluated}, _TREC_EVAL_MEASURES, relevance_level
    )
    per_query = {q: {label: float(raw[q][key]) for key, label in MEASURES} for q in evaluated}
    mean = {label: sum(m[label] for m in per_query.values()) / len(per_query) for _, label in MEASURES}
    return RunMetrics(
        name=name,
        per_query=per_query,
        mean=mean,
        unjudged=[q for q in run if q not in judged],
        unretrieved=sorted(judged - set(run)),
    )
