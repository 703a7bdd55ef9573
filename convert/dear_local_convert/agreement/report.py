"""Writing a check's report: report.json, report.md and a plot.

A report is what :func:`dear_local_convert.agreement.check.check` returns: a dict whose
``reference_row`` and ``rows`` are :class:`~dear_local_convert.agreement.row.CheckRow` records;
or, with ``kind: "pointwise"``, what :func:`dear_local_convert.agreement.pointwise.check_pointwise`
returns, whose rows are :class:`~dear_local_convert.agreement.pointwise.PointwiseRow` records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from dear_local.fileio import atomic_path, write_text_atomic

from dear_local_convert.agreement.row import CheckRow

NO_GATES = "no gates"  # a quant judged against an empty set of gates: nothing passed, nothing failed


def _gates_cell(r) -> str:
    if r.gate_failures is None:
        return "-"
    if r.gate_failures:
        return "FAIL: " + "; ".join(r.gate_failures)
    return "pass"


# Columns both kinds of report show (a CheckRow or a PointwiseRow has each of these fields).
_QUANT = [
    ("quant", lambda r: r.label),
    ("MiB", lambda r: f"{r.bytes / 2**20:.0f}" if r.bytes else "-"),
    ("bpw", lambda r: f"{r.bits_per_weight:.2f}" if r.bits_per_weight else "-"),
]
_TAU = [("mean τ", lambda r: f"{r.mean_tau:.3f}"), ("min τ", lambda r: f"{r.min_tau:.3f}")]
_NDCG = [
    ("nDCG@1/5/10", lambda r: "/".join(f"{100 * r.ndcg[f'ndcg@{k}']:.1f}" for k in (1, 5, 10))),
    ("ΔnDCG@10", lambda r: f"{100 * r.delta_ndcg10:+.1f}"),
]
_MEMORY_GATES = [
    ("peak RSS MiB", lambda r: f"{r.peak_rss / 2**20:.0f}" if r.peak_rss else "-"),
    ("gates", _gates_cell),
]

COLUMNS: list[tuple[str, Callable[[CheckRow], str]]] = [
    *_QUANT,
    ("exact %", lambda r: f"{r.exact_match_pct:.0f}"),
    *_TAU,
    ("top-1 %", lambda r: f"{r.top1_pct:.0f}"),
    ("top-5", lambda r: f"{r.top5_overlap:.2f}"),
    *_NDCG,
    ("parse ok/wf/rep/miss", lambda r: "/".join(str(v) for v in r.status_counts.values())),
    ("FT KL", lambda r: f"{r.first_token_kl:.4f}"),
    ("FT top-1 %", lambda r: f"{r.first_token_top1_pct:.0f}"),
    ("s/window", lambda r: f"{r.seconds_per_window:.2f}"),
    ("prompt tok/s", lambda r: f"{r.prompt_tokens_per_s:.0f}" if r.prompt_tokens_per_s else "-"),
    *_MEMORY_GATES,
]

POINTWISE_COLUMNS: list[tuple[str, Callable]] = [
    *_QUANT,
    *_TAU,
    ("Spearman", lambda r: f"{r.mean_spearman:.3f}"),
    ("top-10", lambda r: f"{r.top10_overlap:.2f}"),
    ("score err max/mean", lambda r: f"{r.max_abs_error:.4f}/{r.mean_abs_error:.4f}"),
    *_NDCG,
    ("docs/s", lambda r: f"{r.docs_per_s:.1f}" if r.docs_per_s else "-"),
    ("tok/s", lambda r: f"{r.tokens_per_s:.0f}" if r.tokens_per_s else "-"),
    *_MEMORY_GATES,
]


def _columns(report: dict) -> list:
    return POINTWISE_COLUMNS if report.get("kind") == "pointwise" else COLUMNS


def _result(report: dict) -> str:
    if not report.get("gates"):
        return "no gates: nothing was judged (give --gate KEY=VALUE, or record the reference from a manifest model)"
    return "all gates pass" if report["passed"] else "a gate FAILED"


def markdown_table(report: dict) -> str:
    """The reference's row, then each quant's, as a markdown table of :data:`COLUMNS`
    (:data:`POINTWISE_COLUMNS` for a pointwise ranker's report)."""
    columns = _columns(report)
    if not report.get("gates"):  # nothing was judged: say so rather than "pass"
        columns = [(c, (lambda r: "-" if r.gate_failures is None else NO_GATES) if c == "gates" else f)
                   for c, f in columns]
    rows = [report["reference_row"], *report["rows"]]
    head = "| " + " | ".join(c for c, _ in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(fmt(r) for _, fmt in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def summary(report: dict, paths: dict) -> str:
    """What ``dear-local check`` and ``demo`` print: the table, then where the report and plot are."""
    return f"{markdown_table(report)}\n\nreport: {paths['md']}\nplot:   {paths['plot']}"


def _pointwise_markdown(report: dict) -> str:
    ref = report["reference"]
    s = ref["slice"]
    m = report.get("machine") or {}
    lo = ref["model"].get("lora")
    lines = [
        "# dear-local agreement report: pointwise ranker",
        "",
        f"- reference: {ref['model'].get('name') or ref['model'].get('checkpoint')} in transformers "
        f"{ref['transformers']} ({ref['dtype']}, {ref['device_name']}), pointwise template {ref['template']}",
        *([f"- LoRA: the reference ran {lo.get('repo') or lo.get('path')} (sha256 {lo['sha256'][:12]}…) on the base "
           "through PEFT; rows marked `(LoRA merged)` have it folded in at conversion"] if lo else []),
        f"- slice: {s['name']}, {s['queries']} queries × {s['passages']} passages (sha256 {s['sha256'][:12]}…)",
        f"- gates: {json.dumps(report['gates']) if report['gates'] else 'none'}",
        *([f"- quants ran on: {m['cpu']}, llama.cpp CPU buffers {m['cpu_buffers']}, threads {m['threads'] or 'default'}, "
           f"{m.get('batch') or 'default'} documents per call"] if m else []),
        f"- result: {_result(report)}",
        "",
        "Each quant scores every (query, passage) pair. τ (Kendall's tau-b) and Spearman compare its scores "
        "with the reference's, query by query; top-10 is the overlap of the ten best. Score errors are "
        "absolute differences of the raw logits, over every pair. nDCG is computed against the slice's qrels "
        "with pytrec_eval; ΔnDCG@10 is quant minus reference, in points. docs/s counts scoring only (not loading "
        "or tokenizing).",
        "",
        markdown_table(report),
        "",
    ]
    return "\n".join(lines)


def markdown(report: dict) -> str:
    if report.get("kind") == "pointwise":
        return _pointwise_markdown(report)
    ref = report["reference"]
    s = ref["slice"]
    p = ref["profile"]
    lines = [
        "# dear-local agreement report",
        "",
        f"- reference: {ref['model'].get('name') or ref['model'].get('checkpoint')} in transformers "
        f"{ref['transformers']} ({ref['dtype']}, {ref['device_name']})",
        *([f"- LoRA: the reference ran {lo.get('repo') or lo.get('path')} (sha256 {lo['sha256'][:12]}…) on the base "
           "through PEFT; rows marked `(LoRA merged)` have it folded into the weights at conversion, rows "
           "`QUANT + ADAPTER` apply a GGUF adapter to a base GGUF at run time"]
          if (lo := ref["model"].get("lora")) else []),
        f"- slice: {s['name']}, {s['queries']} queries × {s['passages']} passages (sha256 {s['sha256'][:12]}…)",
        f"- profile: template {p['template']}, window {p['window']}, stride {p['stride']}, decoding {p['decoding']}",
        f"- gates: {json.dumps(report['gates']) if report['gates'] else 'none'}",
        *([f"- quants ran on: {m['cpu']}, llama.cpp CPU buffers {m['cpu_buffers']}, threads {m['threads'] or 'default'}"]
          if (m := report.get("machine")) else []),
        f"- result: {_result(report)}",
        "",
        "Agreement columns compare each quant's final ranking with the reference's, query by query. "
        "nDCG is computed against the slice's qrels with pytrec_eval; ΔnDCG@10 is quant minus reference, "
        "in points. FT = first-token log-probabilities of the candidate ids (KL of reference to quant, "
        "in nats). Parse counts are per window: ok / wrong_format / repetition / missing_documents.",
        "",
        markdown_table(report),
        "",
    ]
    return "\n".join(lines)


def plot(report: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    sizes = [r.bytes / 2**20 for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, ylabel in (
        (ax1, "mean_tau", "mean Kendall τ vs reference"),
        (ax2, "delta_ndcg10", "ΔnDCG@10 vs reference (points)"),
    ):
        ys = [getattr(r, key) * (100 if key == "delta_ndcg10" else 1) for r in rows]
        ax.plot(sizes, ys, "o")
        # Neighbouring quants often sit close together: alternate labels above and below.
        by_size = sorted(range(len(rows)), key=lambda i: sizes[i])
        for rank, i in enumerate(by_size):
            offset = (4, 5) if rank % 2 == 0 else (4, -12)
            ax.annotate(rows[i].label, (sizes[i], ys[i]), textcoords="offset points", xytext=offset, fontsize=8)
        ax.set_xlabel("file size (MiB)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    ax1.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax2.axhline(0.0, color="gray", lw=0.8, ls="--")
    what = "scores" if report.get("kind") == "pointwise" else "agreement"
    fig.suptitle(f"{report['reference']['slice']['name']}: {what} of each quant against the reference")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return out


def report_json(report: dict) -> dict:
    """``report`` as ``report.json`` holds it: the same keys, each row as :meth:`CheckRow.to_dict`."""
    return {**report, "reference_row": report["reference_row"].to_dict(),
            "rows": [row.to_dict() for row in report["rows"]]}


REPORT_FILES = ("report.json", "report.md", "agreement.png")


def refuse_existing_report(out_dir: str | Path, force: bool) -> None:
    """Refuse to overwrite a report already in ``out_dir`` unless ``force``.

    Raises:
        UserInputError: ``out_dir`` holds one of :data:`REPORT_FILES` and ``force`` is not set, or
            ``out_dir`` is a file.
    """
    from dear_local.errors import UserInputError

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserInputError(f"--out {out_dir} is a file; pass a directory for the report")
    found = [name for name in REPORT_FILES if (out_dir / name).exists()]
    if found and not force:
        raise UserInputError(f"{out_dir} already holds a report ({', '.join(found)}); pass --force to replace it, "
                             "or choose another --out")


def write_report(report: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and ``agreement.png`` into ``out_dir`` (made if missing).

    Returns their paths as ``{"json", "md", "plot"}``. Each file is written atomically.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": write_text_atomic(out_dir / "report.json", json.dumps(report_json(report), indent=2) + "\n"),
        "md": write_text_atomic(out_dir / "report.md", markdown(report)),
        "plot": plot(report, out_dir / "agreement.png"),
    }
    return paths
