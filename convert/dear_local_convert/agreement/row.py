"""One row of a check's report: one model's figures against the reference, as a typed record.

:func:`dear_local_convert.agreement.check.check` makes one :class:`CheckRow` per GGUF (and one for the
reference itself); the gates (:mod:`.gates`) and the report (:mod:`.report`) read its attributes.
``report.json`` holds :meth:`CheckRow.to_dict`, whose keys are the field names, in field order.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class CheckRow:
    """A model's run over the eval slice, compared with the reference's run of the same slice.

    Agreement figures compare final rankings query by query; percentages are 0-100, Kendall τ is in
    [-1, 1], nDCG values are fractions (0-1, not points). The reference's own row compares the
    reference with itself (exact match 100, τ 1) and carries its nDCG.
    """

    label: str  # "Q4_K_M", "Q4_K_M+imatrix", "F32 (LoRA merged)", "F32 + ADAPTER", "reference (DTYPE, DEVICE)"
    path: str | None  # the GGUF checked; None for the reference
    bytes: int | None  # size on disk in bytes (GGUF plus a runtime adapter); None for the reference
    bits_per_weight: float | None  # 8 * bytes / parameters; None when unknown
    exact_match_pct: float  # % of queries whose ranking equals the reference's
    mean_tau: float  # mean Kendall τ of each query's ranking with the reference's
    min_tau: float  # the lowest per-query τ
    top1_pct: float  # % of queries with the reference's first passage first
    top5_overlap: float  # mean |top-5 ∩ reference top-5| / 5, 0-1
    ndcg: dict[str, float]  # {"ndcg@1", "ndcg@5", "ndcg@10"}: mean over queries against the slice's qrels
    delta_ndcg10: float  # nDCG@10 minus the reference's (negative: ranks worse)
    status_counts: dict[str, int]  # windows per parse status, every status of contract.STATUSES in order
    first_token_kl: float  # mean KL(reference || model) of each query's first-window first-token log-probs, nats
    first_token_max_kl: float  # the largest of those, nats
    first_token_top1_pct: float  # % of queries whose most likely first id is the reference's
    seconds_per_window: float  # prompt + decode wall time per window, seconds
    prompt_tokens_per_s: float | None  # prompt tokens evaluated per second; None when none took time
    model_calls_per_window: float  # backend evaluations per window
    peak_rss: int | None  # this process's peak resident memory while the model ran, bytes; None for the reference
    per_query_tau: dict[str, float]  # qid -> Kendall τ
    lora: dict | None  # {"mode": "merged" | "runtime", "sha256", "adapter"}; None without an adapter
    gate_failures: tuple[str, ...] | None = None  # sentences of failed gates; () passes; None: not judged (reference)

    def to_dict(self) -> dict:
        """The row as ``report.json`` holds it: field names as keys, in order; ``gate_failures`` a
        list, and absent from the reference's row."""
        return row_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CheckRow":
        """A row read back from ``report.json`` (:meth:`to_dict`'s shape).

        Raises:
            TypeError: a key that is not a field, or a field missing (other than ``gate_failures``).
        """
        data = dict(data)
        if data.get("gate_failures") is not None:
            data["gate_failures"] = tuple(data["gate_failures"])
        return cls(**data)

    def __getitem__(self, key: str):
        """``row["mean_tau"]``, as when rows were dicts: deprecated, read ``row.mean_tau`` instead.

        Raises:
            KeyError: ``key`` is not a key of :meth:`to_dict`.
        """
        warnings.warn(f'CheckRow[{key!r}] is deprecated: read the attribute (row.{key}) or row.to_dict()',
                      DeprecationWarning, stacklevel=2)
        return self.to_dict()[key]


def row_dict(row) -> dict:
    """A report row dataclass (:class:`CheckRow`, or a pointwise check's row) as ``report.json`` holds it:
    field names as keys, in order; ``gate_failures`` a list, and absent when the row was not judged."""
    out = asdict(row)
    if row.gate_failures is None:
        del out["gate_failures"]
    else:
        out["gate_failures"] = list(row.gate_failures)
    return out
