"""`dear-local imatrix`: a ranking-calibrated importance matrix for the low-bit quants (needs the `convert` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dear_local.cli.options import DecodingOption, ForceOption, TemplateOption
from dear_local.errors import missing_extra


def imatrix(
    checkpoint: str = typer.Argument(..., help="HF checkpoint directory, HF repo id, or a model name from `dear-local models`."),
    out: Path = typer.Option(..., "--out", "-o", help="Importance matrix to write (GGUF imatrix format, e.g. imatrix.gguf)."),
    slice_name: str = typer.Option("dl19-top20", "--slice", help="Calibration slice: dl19-top20 or dl19-top100."),
    queries: Optional[int] = typer.Option(None, "--queries", min=1, help="Use only the first N calibration queries."),
    passages: Optional[int] = typer.Option(None, "--passages", min=1, help="Use only the first M passages per query."),
    eval_slice: str = typer.Option(
        "noveleval", "--eval-slice", help="The evaluation slice; calibration on a slice that shares queries with it is refused."
    ),
    template: TemplateOption = None,
    decoding: DecodingOption = None,
    device: str = typer.Option("auto", "--device", help="cuda, cpu, or auto (cuda when available)."),
    dtype: str = typer.Option("bf16", "--dtype", help="bf16 (as the reference) or fp32."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Revision of an HF repo id."),
    force: ForceOption = False,
) -> None:
    """Collect an importance matrix from the model ranking a calibration slice, in transformers.

    Hooks on every Linear layer sum the squared input activations per column while the model
    ranks each query's window under its profile (prompt and answer tokens). The file is
    llama.cpp's GGUF imatrix format, named by GGUF tensor, for `dear-local quantize --imatrix`
    (or llama-quantize --imatrix).
    """
    import importlib.util

    # torch is imported where the model loads, after the cheap refusals (an existing --out, a
    # calibration slice that overlaps the evaluation slice), which then answer in a moment
    for needed in ("gguf", "torch"):
        if importlib.util.find_spec(needed) is None:
            raise missing_extra(needed, "convert")
    from dear_local_convert.quant.imatrix import make_imatrix

    from dear_local_convert.build import resolve_checkpoint

    from dear_local.progress import bar

    ck = resolve_checkpoint(checkpoint, revision)
    ckpt, name, repo, revision = ck.path, ck.name, ck.repo, ck.revision
    profile = ck.profile.with_(template=template, decoding=decoding)
    with bar(total=queries, desc="imatrix", unit="query") as pbar:
        path = make_imatrix(
            ckpt, out, profile, slice_name=slice_name, queries=queries, passages=passages,
            eval_slice_name=eval_slice, device=device, dtype=dtype,
            model={"name": name, "repo": repo, "revision": revision}, force=force,
            on_query=lambda _n: pbar.update(1),
        )
    typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.command()(imatrix)
