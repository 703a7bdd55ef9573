"""The agreement check for pointwise rankers (DeAR-P): every GGUF quant's scores against the reference's.

Each quant scores every (query, passage) pair of the recorded slice through dear-local's runtime
(:class:`dear_local.backends.pointwise.PointwiseModel`). Before anything is scored, every pair's
input ids must equal the reference's: a difference is a converter or template bug, not a
quantization effect, and the check stops at the first differing pair and position.

Per quant (one :class:`PointwiseRow`): Kendall τ and Spearman's ρ of its scores with the
reference's, per query then averaged; the overlap of the top 10; the absolute score error
(max and mean over every pair); nDCG@1/5/10 of its order against the slice's qrels and the
change from the reference's; documents per second and peak memory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from dear_local.backends.loader import choose_cpu_buffers, llama_system_info
from dear_local.env_report import cpu_model
from dear_local.errors import ReferenceError_, UserInputError
from dear_local.gguf_file import Keys
from dear_local.token_ids import first_difference

from dear_local_convert.agreement import metrics
from dear_local_convert.agreement.row import row_dict
from dear_local_convert.agreement.gates import (
    DEFAULT_POINTWISE_GATES,
    POINTWISE_GATES,
    check_gates,
    evaluate_gates,
    manifest_gates,
)
from dear_local_convert.reference.pointwise import order_by_score, read_pointwise_reference

TOP_K = 10


@dataclass(frozen=True)
class PointwiseRow:
    """One pointwise model's scores over the slice, compared with the reference's.

    τ and ρ are in [-1, 1]; overlaps are fractions (0-1); nDCG values are fractions; score
    errors are in the model's logit units.
    """

    label: str  # "Q4_K_M", "F32 (LoRA merged)", "reference (DTYPE, DEVICE)"
    path: str | None  # the GGUF checked; None for the reference
    bytes: int | None  # size on disk; None for the reference
    bits_per_weight: float | None  # 8 * bytes / parameters; None when unknown
    mean_tau: float  # mean over queries of Kendall's tau-b between its scores and the reference's
    min_tau: float  # the lowest per-query τ
    mean_spearman: float  # mean over queries of Spearman's rho between the scores
    top10_overlap: float  # mean |top-10 ∩ reference top-10| / 10
    max_abs_error: float  # the largest |score - reference score| over every pair
    mean_abs_error: float  # the mean of |score - reference score| over every pair
    ndcg: dict[str, float]  # {"ndcg@1", "ndcg@5", "ndcg@10"} of its order against the qrels
    delta_ndcg10: float  # nDCG@10 minus the reference's (negative: ranks worse)
    docs_per_s: float | None  # pairs scored per second (tokenizing excluded); None for the reference
    tokens_per_s: float | None  # input tokens per second; None for the reference
    peak_rss: int | None  # peak resident memory while the model ran, bytes; None for the reference
    per_query_tau: dict[str, float]  # qid -> Kendall τ
    lora: dict | None  # {"mode": "merged", "sha256"}; None without an adapter
    gate_failures: tuple[str, ...] | None = None  # failed gates; () passes; None: not judged (reference)

    def to_dict(self) -> dict:
        """The row as ``report.json`` holds it (:func:`~dear_local_convert.agreement.row.row_dict`)."""
        return row_dict(self)


def _summarize(label: str, ref_q: list[dict], scores: dict[str, list[float]], qrels, ref_ndcg, **extra) -> PointwiseRow:
    taus, rhos, overlaps, errors = {}, [], [], []
    orders = {}
    for q in ref_q:
        qid, got = q["qid"], scores[q["qid"]]
        tau, rho = metrics.score_correlations(q["scores"], got)
        taus[str(qid)] = tau
        rhos.append(rho)
        orders[qid] = order_by_score(q["docids"], got)
        overlaps.append(metrics.topk_overlap(q["order"], orders[qid], TOP_K))
        errors.extend(np.abs(np.asarray(got, dtype=np.float64) - np.asarray(q["scores"], dtype=np.float64)))
    quality = metrics.ndcg(orders, qrels)
    return PointwiseRow(
        label=label, mean_tau=float(np.mean(list(taus.values()))), min_tau=float(min(taus.values())),
        mean_spearman=float(np.mean(rhos)), top10_overlap=float(np.mean(overlaps)),
        max_abs_error=float(np.max(errors)), mean_abs_error=float(np.mean(errors)), ndcg=quality.mean,
        delta_ndcg10=metrics.ndcg_delta(ref_ndcg, quality) if ref_ndcg is not None else 0.0,
        per_query_tau=taus, **extra,
    )


def _confirm_ids(model, eval_slice, ref_q: list[dict], label: str) -> list[list[list[int]]]:
    """Every pair's input ids, refused loudly where they differ from the reference's."""
    out = []
    for q, rec in zip(eval_slice.queries, ref_q):
        ids = [model.pair_ids(q.text, p) for p in q.passages]
        for docid, got, want in zip(q.docids, ids, rec["prompt_ids"]):
            if got != want:
                i = first_difference(got, want)
                raise ReferenceError_(
                    f"{label}: the input ids of query {q.qid}, passage {docid} differ from the reference at position "
                    f"{i} (gguf {got[i:i + 5]} vs reference {want[i:i + 5]}); this is a converter or template bug: "
                    "the GGUF's tokenizer or pointwise template does not match the checkpoint's"
                )
        out.append(ids)
    return out


def run_quant(gguf: Path, header: dict, ref_q: list[dict], eval_slice, qrels, ref_ndcg, *, n_threads=None,
              cpu_buffers=None, batch: int | None = None) -> PointwiseRow:
    """Score the slice with one pointwise GGUF and summarize it against the reference."""
    from dear_local.backends.pointwise import DEFAULT_BATCH, PointwiseModel
    from dear_local.gguf_file import read_header
    from dear_local.settings import get_settings

    from dear_local_convert.agreement.check import PeakRSS, quant_label

    label = quant_label(gguf)
    meta = read_header(gguf)
    n_params = sum(int(np.prod(t.shape)) for t in meta.tensors) or None
    lora = None
    ref_lora = header["model"].get("lora")
    if not meta.get(Keys.LORA_SHA256) and ref_lora:
        label += " (no LoRA)"
    if meta.get(Keys.LORA_SHA256):
        lora = {"mode": "merged", "sha256": meta.get(Keys.LORA_SHA256), "adapter": None}
        label += " (LoRA merged)"
        ref_sha = (header["model"].get("lora") or {}).get("sha256")
        if ref_sha and ref_sha != lora["sha256"]:
            raise ReferenceError_(
                f"{label} was made from the LoRA adapter with sha256 {lora['sha256'][:12]}…, but the reference ran "
                f"one with sha256 {ref_sha[:12]}…; convert the reference's adapter or record a reference with this one"
            )
    if meta.get(Keys.POINTWISE_TEMPLATE) and meta.get(Keys.POINTWISE_TEMPLATE) != header["template"]:
        raise ReferenceError_(
            f"{gguf.name} reads pairs with the pointwise template {meta.get(Keys.POINTWISE_TEMPLATE)!r} but the "
            f"reference used {header['template']!r}; record a reference with the model's template"
        )
    with PeakRSS() as rss:
        with PointwiseModel(gguf, batch=batch or DEFAULT_BATCH, n_threads=n_threads, cpu_buffers=cpu_buffers,
                            flash_attn=get_settings().flash_attn) as model:
            ids = _confirm_ids(model, eval_slice, ref_q, gguf.name)
            t0 = time.perf_counter()
            scores = {q.qid: [float(s) for s in model.score_ids(qids)] for q, qids in zip(eval_slice.queries, ids)}
            seconds = time.perf_counter() - t0
    n_docs = sum(len(i) for i in ids)
    n_tokens = sum(len(x) for i in ids for x in i)
    size = gguf.stat().st_size
    return _summarize(
        label, ref_q, scores, qrels, ref_ndcg, path=str(gguf), bytes=size,
        bits_per_weight=8 * size / n_params if n_params else None,
        docs_per_s=n_docs / seconds if seconds else None, tokens_per_s=n_tokens / seconds if seconds else None,
        peak_rss=rss.peak, lora=lora,
    )


def check_pointwise(
    reference: str | Path,
    ggufs: list[str | Path],
    *,
    gates: dict | None = None,
    gate_overrides: dict | None = None,
    slice_name: str | None = None,
    n_threads: int | None = None,
    cpu_buffers: str | None = None,
    batch: int | None = None,
    on_quant: Callable[[PointwiseRow], None] | None = None,
) -> dict:
    """Check every pointwise GGUF against a pointwise reference file; return the report as a dict.

    The report has the listwise check's keys (``reference``, ``reference_row``, ``gates``,
    ``machine``, ``rows``, ``passed``) plus ``kind: "pointwise"``; rows are :class:`PointwiseRow`.
    ``gates`` defaults to the reference model's manifest gates (``POINTWISE_GATES`` keys), or to
    ``DEFAULT_POINTWISE_GATES`` (DeAR-P's) when the reference names no manifest;
    ``batch`` is documents per llama.cpp call.

    Raises:
        ReferenceError_: a missing, corrupt or mismatched reference; input ids that differ.
        UserInputError: a GGUF path that does not exist, a listwise GGUF, an unknown gate.
    """
    from dear_local_convert.slices import load_slice

    header, ref_q = read_pointwise_reference(reference)
    s = header["slice"]
    if slice_name and slice_name != s["name"]:
        raise ReferenceError_(f"the reference was recorded on slice {s['name']!r}, not {slice_name!r}; "
                              "record a new reference for that slice")
    eval_slice = load_slice(s["name"], queries=s["queries"], passages=s["passages"])
    if eval_slice.sha256 != s["sha256"] or [q.qid for q in eval_slice.queries] != [r["qid"] for r in ref_q]:
        raise ReferenceError_(
            f"the slice {s['name']!r} on this machine differs from the one the reference recorded; "
            "use the same data or record a new reference"
        )
    from dear_local.backends.llama import is_pointwise_file

    paths = [Path(g) for g in ggufs]
    for p in paths:
        if not p.is_file():
            raise UserInputError(f"{p} does not exist; pass paths of pointwise .gguf files to check (a LoRA adapter "
                                 "is merged at conversion for a pointwise ranker, never applied at run time)")
        if not is_pointwise_file(p):
            raise UserInputError(f"{p.name} is a listwise model, not a pointwise ranker; the reference is a pointwise "
                                 "one, so check this file against a listwise reference of its own checkpoint")
    if gates is None:
        gates = manifest_gates(header["model"].get("name")) or dict(DEFAULT_POINTWISE_GATES)
    gates = {**check_gates(gates, "gates", POINTWISE_GATES), **check_gates(gate_overrides or {}, "--gate", POINTWISE_GATES)}
    ref_scores = {q["qid"]: q["scores"] for q in ref_q}
    ref_row = _summarize(f"reference ({header['dtype']}, {header['device_name']})", ref_q, ref_scores, eval_slice.qrels,
                         None, path=None, bytes=None, bits_per_weight=None, docs_per_s=None, tokens_per_s=None,
                         peak_rss=None, lora=None)
    ref_ndcg = metrics.ndcg({q["qid"]: q["order"] for q in ref_q}, eval_slice.qrels)
    rows = []
    for p in paths:
        row = run_quant(p, header, ref_q, eval_slice, eval_slice.qrels, ref_ndcg, n_threads=n_threads,
                        cpu_buffers=cpu_buffers, batch=batch)
        row = replace(row, gate_failures=tuple(evaluate_gates(row, gates, POINTWISE_GATES)))
        rows.append(row)
        if on_quant is not None:
            on_quant(row)
    return {
        "kind": "pointwise",
        "reference": {k: header.get(k) for k in ("model", "device", "device_name", "dtype", "torch", "transformers",
                                                  "peft", "template", "slice", "dear_local") if k in header},
        "reference_row": ref_row,
        "gates": gates,
        "machine": {"cpu": cpu_model(), "llama_cpp_system_info": llama_system_info().strip(),
                    "cpu_buffers": choose_cpu_buffers(cpu_buffers).mode, "threads": n_threads,
                    "batch": batch},
        "rows": rows,
        "passed": all(not r.gate_failures for r in rows),
    }
