"""Agreement commands: reference, check and demo (they need the `convert` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .options import CpuBuffersOption, cpu_buffers_value

from ..errors import GateFailure, missing_extra


def _need_convert():
    try:
        import convert.check  # noqa: F401
        import pytrec_eval  # noqa: F401
    except ImportError as exc:
        raise missing_extra(exc.name or "convert", "convert") from None


def reference(
    checkpoint: str = typer.Argument(..., help="HF checkpoint directory, HF repo id, or a model name from `dear-local models`."),
    out: Path = typer.Option(..., "--out", "-o", help="Reference file to write (JSONL)."),
    slice_name: str = typer.Option("noveleval", "--slice", help="Eval slice: noveleval, dl19-top20 or dl19-top100."),
    queries: Optional[int] = typer.Option(None, "--queries", help="Use only the first N queries."),
    passages: Optional[int] = typer.Option(None, "--passages", help="Use only the first M passages per query."),
    template: Optional[str] = typer.Option(None, "--template", "--profile", help="Prompt template (default: the model's)."),
    decoding: Optional[str] = typer.Option(None, "--decoding", help="greedy, constrained or first-token (default: the model's)."),
    device: str = typer.Option("auto", "--device", help="cuda, cpu, or auto (cuda when available)."),
    dtype: str = typer.Option("bf16", "--dtype", help="bf16 (the reference) or fp32."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Revision of an HF repo id."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing reference file."),
) -> None:
    """Record the full-precision reference: transformers on a GPU (CPU fallback), once, as a file."""
    _need_convert()
    from convert.reference import write_reference
    from convert.slices import load_slice

    from convert.build import resolve_checkpoint

    ck = resolve_checkpoint(checkpoint, revision)
    ckpt, name, repo, revision = ck.path, ck.name, ck.repo, ck.revision
    profile = ck.profile.with_(template=template, decoding=decoding)
    eval_slice = load_slice(slice_name, queries=queries, passages=passages)
    path = write_reference(
        ckpt, eval_slice, profile, out, device=device, dtype=dtype, model_name=name,
        source_repo=repo, revision=revision, force=force,
    )
    typer.echo(str(path))


def check(
    ggufs: List[Path] = typer.Argument(..., help="GGUF files to check."),
    reference_file: Path = typer.Option(..., "--reference", "-r", help="Reference file from `dear-local reference`."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for report.json, report.md and agreement.png."),
    slice_name: Optional[str] = typer.Option(None, "--slice", help="Refuse the reference unless it was recorded on this slice."),
    template: Optional[str] = typer.Option(None, "--template", "--profile", help="Refuse the reference unless it used this template."),
    decoding: Optional[str] = typer.Option(None, "--decoding", help="Refuse the reference unless it used this decoding mode."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for llama.cpp."),
    cpu_buffers: CpuBuffersOption = None,
    gate: List[str] = typer.Option(
        [], "--gate", help="Override a manifest gate, e.g. --gate min_mean_kendall_tau=0.9 (repeatable)."
    ),
) -> None:
    """Check GGUF quants against a reference: agreement, nDCG, speed and memory, with gates.

    Gates come from the reference model's manifest (see models/*.toml) and --gate.
    Exits 1 when a gate fails, after writing the report.
    """
    _need_convert()
    run_check(
        reference_file, ggufs, out, slice_name=slice_name, template=template, decoding=decoding,
        threads=threads, gate_overrides=_parse_gates(gate), cpu_buffers=cpu_buffers_value(cpu_buffers),
    )


GATE_KEYS = ("min_mean_kendall_tau", "min_exact_match", "max_delta_ndcg10", "max_wrong_format_rate")


def _parse_gates(items: list[str]) -> dict:
    from ..errors import UserInputError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in GATE_KEYS:
            raise UserInputError(f"--gate {item!r} is not KEY=VALUE with KEY one of: {', '.join(GATE_KEYS)}")
        try:
            out[key] = float(value)
        except ValueError:
            raise UserInputError(f"--gate {item!r}: {value!r} is not a number") from None
    return out


def run_check(
    reference_file, ggufs, out, *, slice_name=None, template=None, decoding=None, threads=None, gate_overrides=None,
    cpu_buffers=None,
) -> dict:
    from convert.check import check as do_check
    from convert.reference import read_reference
    from convert.report import markdown_table, write_report

    from ..contract import Profile
    from ..progress import bar

    profile = None
    if template or decoding:
        recorded = Profile.from_dict(read_reference(reference_file)[0]["profile"])
        profile = recorded.with_(template=template, decoding=decoding)
    from convert.check import manifest_gates

    header = read_reference(reference_file)[0]
    gates = {**manifest_gates(header["model"].get("name")), **(gate_overrides or {})}
    with bar(total=len(ggufs), desc="checking", unit="quant") as pbar:
        report = do_check(
            reference_file, ggufs, gates=gates, slice_name=slice_name, profile=profile, n_threads=threads,
            cpu_buffers=cpu_buffers, on_quant=lambda _row: pbar.update(1),
        )
    paths = write_report(report, out)
    typer.echo(markdown_table(report))
    typer.echo(f"\nreport: {paths['md']}\nplot:   {paths['plot']}")
    if not report["passed"]:
        failed = [r["label"] for r in report["rows"] if r["gate_failures"]]
        raise GateFailure(f"agreement gates failed for {', '.join(failed)}; see {paths['md']}")
    return report


def demo(
    queries: int = typer.Option(5, "--queries", help="NovelEval queries to use."),
    passages: int = typer.Option(10, "--passages", help="Passages per query."),
    force: bool = typer.Option(False, "--force", help="Rebuild the ladder and the reference."),
) -> None:
    """The whole pipeline on the stand-in, offline: ladder -> reference -> check -> report."""
    _need_convert()
    from convert.demo import run_demo

    run_demo(queries=queries, passages=passages, force=force)


def register(app: typer.Typer) -> None:
    app.command()(reference)
    app.command()(check)
    app.command()(demo)
