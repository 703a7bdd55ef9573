"""The agreement check: every GGUF quant against the recorded reference.

Each quant runs through the dear_local runtime with the profile the reference
recorded. Before anything is ranked, the prompt token ids of every query's first
window must equal the reference's: a difference is a converter bug, not a
quantization effect, and the check stops with the first differing position.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from dear_local.backends import factory
from dear_local.backends.llama import LlamaCppBackend
from dear_local.backends.loader import choose_cpu_buffers, llama_system_info
from dear_local.env_report import cpu_model
from dear_local.contract import STATUSES, Profile, first_window
from dear_local.engine import prompt_ids
from dear_local.errors import ReferenceError_, UserInputError
from dear_local.gguf_file import Keys
from dear_local.run_options import RunOptions
from dear_local.token_ids import first_difference

from dear_local_convert.agreement import metrics
from dear_local_convert.agreement.gates import check_gates, evaluate_gates, manifest_gates
from dear_local_convert.reference import read_reference
from dear_local_convert.agreement.row import CheckRow
from dear_local_convert.slice_runs import run_queries, vocab_fingerprint
from dear_local_convert.slices import load_slice

QUANT_RE = re.compile(r"-((?:I?Q\d[\w]*)|BF16|F16|F32)$", re.IGNORECASE)


def quant_label(path: Path) -> str:
    """The quant type from the file name, with ``+imatrix`` when the manifest.json beside the
    file says it was quantized with an importance matrix (so both variants can share a report)."""
    m = QUANT_RE.search(path.stem)
    label = m.group(1).upper() if m else path.stem
    from dear_local_convert.quant.quantize import MANIFEST, load_manifest

    entries = load_manifest(path.parent / MANIFEST).get("files", [])
    if any(e.get("file") == path.name and e.get("imatrix") for e in entries):
        label += "+imatrix"
    return label


LORA_JOIN = ".gguf+"  # BASE.gguf+ADAPTER.gguf: BASE with a GGUF LoRA adapter applied at run time


def split_model_arg(arg: str | Path) -> tuple[Path, Path | None]:
    """``BASE.gguf+ADAPTER.gguf`` -> ``(BASE.gguf, ADAPTER.gguf)``; any other path -> ``(path, None)``."""
    text = str(arg)
    if LORA_JOIN in text:
        base, adapter = text.split(LORA_JOIN, 1)
        return Path(base + ".gguf"), Path(adapter)
    return Path(text), None


def lora_label(label: str, backend, adapter: Path | None, header: dict) -> tuple[str, dict | None]:
    """Mark a row as LoRA merged at conversion, base + runtime adapter, or (against a LoRA reference) no LoRA.

    Returns ``(label, lora)``, ``lora`` being ``{"mode": "merged" | "runtime", "sha256", "adapter"}`` or None.

    Raises:
        ReferenceError_: the GGUF records a different adapter (by sha256) from the reference's.
    """
    ref = header["model"].get("lora") or {}
    metadata = backend.metadata or {}  # the GGUF's keys (llama.cpp backends; empty for others)
    if adapter is not None:
        adapter_meta = backend.lora_metadata or {}
        info = {"mode": "runtime", "adapter": str(adapter), "sha256": adapter_meta.get(Keys.LORA_SHA256)}
        label = f"{label} + {adapter.stem}"
    elif metadata.get(Keys.LORA_SHA256):
        info = {"mode": "merged", "adapter": None, "sha256": metadata[Keys.LORA_SHA256]}
        label = f"{label} (LoRA merged)"
    else:
        return (f"{label} (no LoRA)" if ref else label), None
    if ref.get("sha256") and info["sha256"] and info["sha256"] != ref["sha256"]:
        raise ReferenceError_(
            f"{label} was made from the LoRA adapter with sha256 {info['sha256'][:12]}…, but the reference ran "
            f"{ref.get('repo') or ref.get('path')} (sha256 {ref['sha256'][:12]}…); convert the reference's adapter "
            "or record a reference with this one"
        )
    return label, info


class PeakRSS:
    """Samples this process's resident memory in a thread; ``peak`` is the maximum seen."""

    def __init__(self, interval: float = 0.05) -> None:
        import psutil

        self._proc = psutil.Process(os.getpid())
        self._interval = interval
        self._stop = threading.Event()
        self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


@dataclass
class RunResult:
    """One model's run over the slice: rankings, first-token vectors, statuses, cost."""

    label: str
    orders: dict[str, list[str]]
    logprobs: dict[str, list[float]]
    statuses: Counter
    windows: int
    prompt_tokens: int
    prompt_seconds: float
    decode_seconds: float
    model_calls: int
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_records(cls, label: str, records: list[dict], **extra) -> "RunResult":
        windows = [w for r in records for w in r["windows"]]
        return cls(
            label=label,
            orders={r["qid"]: r["order"] for r in records},
            logprobs={r["qid"]: r["first_token_logprobs"] for r in records},
            statuses=Counter(w["status"] for w in windows),
            windows=len(windows),
            prompt_tokens=sum(len(w["prompt_ids"]) for w in windows),
            prompt_seconds=sum(w["prompt_seconds"] for w in windows),
            decode_seconds=sum(w["decode_seconds"] for w in windows),
            model_calls=sum(w["model_calls"] for w in windows),
            extra=extra,
        )


def load_checked_slice(
    header: dict, *, slice_name: str | None = None, template: str | None = None, decoding: str | None = None
):
    """The slice and profile the reference was recorded with, refusing any mismatch with the request.

    Returns ``(eval_slice, recorded_profile)``.

    Raises:
        ReferenceError_: ``slice_name``, ``template`` or ``decoding`` differ from the recording,
            or this machine's copy of the slice differs from the recorded one.
    """
    s = header["slice"]
    if slice_name and slice_name != s["name"]:
        raise ReferenceError_(
            f"the reference was recorded on slice {s['name']!r}, not {slice_name!r}; "
            "record a new reference for that slice"
        )
    recorded = Profile.from_dict(header["profile"])
    profile = recorded.with_(template=template, decoding=decoding)
    if profile != recorded:
        raise ReferenceError_(
            f"the reference was recorded with profile {recorded.to_dict()}, not {profile.to_dict()}; "
            "check reuses the recorded profile, so drop the profile options or record a new reference"
        )
    eval_slice = load_slice(s["name"], queries=s["queries"], passages=s["passages"])
    if eval_slice.sha256 != s["sha256"]:
        raise ReferenceError_(
            f"the slice {s['name']!r} on this machine (sha256 {eval_slice.sha256[:12]}…) differs from the one "
            f"the reference recorded ({s['sha256'][:12]}…); use the same data or record a new reference"
        )
    return eval_slice, recorded


def confirm_prompt_ids(backend: LlamaCppBackend, profile: Profile, eval_slice, ref_queries: list[dict], label: str) -> None:
    """Refuse, loudly, a quant whose prompt tokens differ from the reference's."""
    for q, rec in zip(eval_slice.queries, ref_queries):
        ids = prompt_ids(backend, profile, q.text, first_window(q.passages, profile.window))
        ref_ids = rec["windows"][0]["prompt_ids"]
        if ids != ref_ids:
            i = first_difference(ids, ref_ids)
            ours = backend.detokenize(ids[i : i + 5])
            raise ReferenceError_(
                f"{label}: prompt token ids of query {q.qid} differ from the reference at position {i} "
                f"(gguf {ids[i:i + 5]} {ours!r} vs reference {ref_ids[i:i + 5]}); this is a converter bug: "
                "the GGUF's tokenizer or chat template does not match the checkpoint's"
            )


def run_quant(gguf: Path, header: dict, ref_queries: list[dict], eval_slice, profile: Profile, *, n_threads: int | None = None, cpu_buffers: str | None = None, lora: Path | None = None) -> RunResult:
    label = quant_label(gguf)
    longest = max(len(w["prompt_ids"]) for r in ref_queries for w in r["windows"])
    n_ctx = max(profile.context_tokens(), longest + profile.max_new_tokens() + 8)
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        backend = factory.open_backend(gguf, RunOptions(n_ctx=n_ctx, n_threads=n_threads, cpu_buffers=cpu_buffers,
                                                        lora=lora))
        load_seconds = time.perf_counter() - t0
        try:
            label, lora_info = lora_label(label, backend, lora, header)
            fp = vocab_fingerprint(backend)
            if fp != header["vocab"]:
                raise ReferenceError_(
                    f"{gguf.name} has a different vocabulary ({fp['size']} tokens) from the reference "
                    f"checkpoint ({header['vocab']['size']} tokens); check a GGUF converted from the same model"
                )
            confirm_prompt_ids(backend, profile, eval_slice, ref_queries, gguf.name)
            records = run_queries(backend, profile, eval_slice)
            n_params = backend.n_params
        finally:
            backend.close()
    size = gguf.stat().st_size + (lora.stat().st_size if lora is not None else 0)
    return RunResult.from_records(
        label,
        records,
        path=str(gguf),
        bytes=size,
        bits_per_weight=8 * size / n_params if n_params else None,
        peak_rss=rss.peak,
        load_seconds=load_seconds,
        lora=lora_info,
    )


def summarize(run: RunResult, ref: RunResult, eval_slice, ref_ndcg) -> CheckRow:
    """Every figure of one report row, not yet judged by the gates."""
    agreement = metrics.summarize_agreement(ref.orders, run.orders)
    first = metrics.summarize_first_token(ref.logprobs, run.logprobs)
    quality = metrics.ndcg(run.orders, eval_slice.qrels)
    windows = max(run.windows, 1)
    return CheckRow(
        label=run.label,
        path=run.extra.get("path"),
        bytes=run.extra.get("bytes"),
        bits_per_weight=run.extra.get("bits_per_weight"),
        exact_match_pct=agreement.exact_match_pct,
        mean_tau=agreement.mean_tau,
        min_tau=agreement.min_tau,
        top1_pct=agreement.top1_pct,
        top5_overlap=agreement.top5_overlap,
        ndcg=quality.mean,
        delta_ndcg10=metrics.ndcg_delta(ref_ndcg, quality),
        status_counts={s: run.statuses.get(s, 0) for s in STATUSES},
        first_token_kl=first.mean_kl,
        first_token_max_kl=first.max_kl,
        first_token_top1_pct=first.top1_pct,
        seconds_per_window=(run.prompt_seconds + run.decode_seconds) / windows,
        prompt_tokens_per_s=run.prompt_tokens / run.prompt_seconds if run.prompt_seconds else None,
        model_calls_per_window=run.model_calls / windows,
        peak_rss=run.extra.get("peak_rss"),
        per_query_tau=agreement.per_query_tau,
        lora=run.extra.get("lora"),
    )


def check(
    reference: str | Path,
    ggufs: list[str | Path],
    *,
    gates: dict | None = None,
    gate_overrides: dict | None = None,
    slice_name: str | None = None,
    template: str | None = None,
    decoding: str | None = None,
    n_threads: int | None = None,
    cpu_buffers: str | None = None,
    on_quant: Callable[[CheckRow], None] | None = None,
) -> dict:
    """Check every GGUF against a reference file; return the report as a dict.

    ``gates`` defaults to the reference model's manifest gates; ``gate_overrides``
    replaces single ones. ``slice_name``, ``template`` and ``decoding`` only
    confirm what the reference recorded (check always reuses the recorded profile).
    The report holds ``reference``, ``reference_row`` (a :class:`CheckRow` of the reference against
    itself), ``gates``, ``machine``, ``rows`` (a :class:`CheckRow` per GGUF, in order, judged by the
    gates) and ``passed``; see docs/converting.md, "Checking a quant". ``on_quant`` gets each row as
    it is made.
    A GGUF written ``BASE.gguf+ADAPTER.gguf`` runs BASE with the GGUF LoRA adapter
    applied at run time; each row's ``lora`` says whether it is ``merged`` (at
    conversion) or ``runtime``, and its label says so too.

    Raises:
        ReferenceError_: a missing, corrupt or mismatched reference; prompt ids that differ.
        UserInputError: a GGUF path that does not exist, an unknown gate.
    """
    header, ref_queries = read_reference(reference)
    models = [split_model_arg(g) for g in ggufs]
    for p in [p for pair in models for p in pair if p is not None]:
        if not p.is_file():
            raise UserInputError(f"{p} does not exist; pass paths of .gguf files to check (BASE.gguf+ADAPTER.gguf for a LoRA adapter)")
    from dear_local.backends.llama import is_pointwise_file

    from dear_local.errors import DearLocalError

    for base, _ in models:
        try:
            pointwise = is_pointwise_file(base)
        except DearLocalError:
            pointwise = False  # not a readable GGUF: opening it names what is wrong
        if pointwise:
            raise UserInputError(f"{base.name} is a pointwise ranker (DeAR-P) but the reference is a listwise one; check "
                                 "it against a pointwise reference of its own checkpoint (`dear-local reference` on it)")
    eval_slice, recorded = load_checked_slice(header, slice_name=slice_name, template=template, decoding=decoding)
    if [q.qid for q in eval_slice.queries] != [r["qid"] for r in ref_queries]:
        raise ReferenceError_("the reference's queries are not the slice's queries; recreate the reference")
    if gates is None:
        gates = manifest_gates(header["model"].get("name"))
    gates = {**check_gates(gates, "gates"), **check_gates(gate_overrides or {}, "--gate")}
    ref = RunResult.from_records("reference", ref_queries)
    ref_ndcg = metrics.ndcg(ref.orders, eval_slice.qrels)
    ref_row = replace(summarize(ref, ref, eval_slice, ref_ndcg),
                      label=f"reference ({header['dtype']}, {header['device_name']})", bytes=None, peak_rss=None)
    rows = []
    for p, adapter in models:
        run = run_quant(p, header, ref_queries, eval_slice, recorded, n_threads=n_threads, cpu_buffers=cpu_buffers,
                        lora=adapter)
        row = summarize(run, ref, eval_slice, ref_ndcg)
        row = replace(row, gate_failures=tuple(evaluate_gates(row, gates)))
        rows.append(row)
        if on_quant is not None:
            on_quant(row)
    return {
        "reference": {k: header.get(k) for k in ("model", "device", "device_name", "dtype", "torch", "transformers",
                                                  "engine", "profile", "slice", "dear_local") if k in header},
        "reference_row": ref_row,
        "gates": gates,
        "machine": {  # where the quants ran: speed figures mean little without it
            "cpu": cpu_model(),
            "llama_cpp_system_info": llama_system_info().strip(),
            "cpu_buffers": choose_cpu_buffers(cpu_buffers).mode,
            "threads": n_threads,
        },
        "rows": rows,
        "passed": all(not r.gate_failures for r in rows),
    }


def run_check(reference: str | Path, ggufs: list[str | Path], out: str | Path, *, force: bool = False,
              **options) -> tuple[dict, dict]:
    """:func:`check` with a progress bar, then the report written to ``out``.

    ``options`` are :func:`check`'s. Returns ``(report, paths)`` with paths of
    ``report.json``, ``report.md`` and ``agreement.png``; a failed gate does not
    raise here (see :func:`gate_failure`), so callers can show the report first.
    A report already in ``out`` is refused before anything runs, unless ``force``.

    Raises:
        UserInputError: a report in ``out`` and no ``force``.
        What :func:`check` raises.
    """
    from dear_local.progress import bar

    from dear_local_convert.agreement.report import refuse_existing_report, write_report

    refuse_existing_report(out, force)

    with bar(total=len(ggufs), desc="checking", unit="quant") as pbar:
        report = check(reference, ggufs, on_quant=lambda _row: pbar.update(1), **options)
    return report, write_report(report, out)


def run_pointwise_check(reference: str | Path, ggufs: list[str | Path], out: str | Path, *, force: bool = False,
                        **options) -> tuple[dict, dict]:
    """:func:`run_check` for a pointwise reference: :func:`~dear_local_convert.agreement.pointwise.check_pointwise`
    with a progress bar, then the report written to ``out`` (refused if one is there, unless ``force``)."""
    from dear_local.progress import bar

    from dear_local_convert.agreement.pointwise import check_pointwise
    from dear_local_convert.agreement.report import refuse_existing_report, write_report

    refuse_existing_report(out, force)

    with bar(total=len(ggufs), desc="checking", unit="quant") as pbar:
        report = check_pointwise(reference, ggufs, on_quant=lambda _row: pbar.update(1), **options)
    return report, write_report(report, out)


def gate_failure(report: dict, paths: dict):
    """A ``GateFailure`` naming the quants that failed a gate, or None when every gate passed."""
    from dear_local.errors import GateFailure

    failed = [r.label for r in report["rows"] if r.gate_failures]
    return GateFailure(f"agreement gates failed for {', '.join(failed)}; see {paths['md']}") if failed else None
