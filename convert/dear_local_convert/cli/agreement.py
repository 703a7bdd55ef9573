"""Agreement commands: reference, check and demo.

``reference`` and ``demo`` need the `convert` extra, ``check`` (and ``reference --server``) only
the `check` extra; each says which ``pip install`` it needs before importing anything heavy.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from dear_local.cli.options import (
    CpuBuffersOption,
    DecodingOption,
    ForceOption,
    Protocol,
    ProtocolOption,
    RequestTimeoutOption,
    ServedModelOption,
    ServerOption,
    TemplateOption,
    ThreadsOption,
    cpu_buffers_value,
    run_options_for_servers,
)
from dear_local.errors import missing_extra


def _need(extra: str, modules: tuple[str, ...]) -> None:
    """Raise the missing-extra error naming ``extra`` unless every module imports."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            raise missing_extra(name, extra) from None


CHECK_MODULES = ("pytrec_eval", "scipy", "matplotlib", "psutil")


def _need_convert() -> None:
    _need("convert", ("torch", "transformers", *CHECK_MODULES))


def reference(
    checkpoint: str = typer.Argument(..., help="HF checkpoint directory, HF repo id, or a model name from `dear-local models`."),
    out: Path = typer.Option(..., "--out", "-o", help="Reference file to write (JSONL)."),
    slice_name: str = typer.Option("noveleval", "--slice", help="Eval slice: noveleval, dl19-top20 or dl19-top100."),
    queries: Optional[int] = typer.Option(None, "--queries", min=1, help="Use only the first N queries."),
    passages: Optional[int] = typer.Option(None, "--passages", min=1, help="Use only the first M passages per query."),
    template: TemplateOption = None,
    decoding: DecodingOption = None,
    device: str = typer.Option("auto", "--device", help="cuda, cpu, or auto (cuda when available)."),
    dtype: str = typer.Option("bf16", "--dtype", help="bf16 (the reference) or fp32."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Revision of an HF repo id."),
    lora: Optional[str] = typer.Option(
        None, "--lora", help="A PEFT LoRA adapter (directory or HF repo id) to run on the checkpoint through PEFT "
        "(default: the model's own adapter, for a LoRA model name).",
    ),
    lora_revision: Optional[str] = typer.Option(None, "--lora-revision", help="Revision of a --lora repo id."),
    force: ForceOption = False,
    server: ServerOption = None,
    protocol: ProtocolOption = Protocol.auto,
    served_model: ServedModelOption = None,
    request_timeout: RequestTimeoutOption = 120.0,
) -> None:
    """Record the full-precision reference: transformers on a GPU (CPU fallback), once, as a file.

    With --lora (or a LoRA model such as dear-8b-listwise-lora) the adapter runs through PEFT,
    and its repo, revision and sha256 go into the reference's header.
    A pointwise ranker (a LlamaForSequenceClassification checkpoint such as DeAR-P, or a base with
    a SEQ_CLS adapter) gets a pointwise reference instead: transformers' score for every (query,
    passage) pair and the ids it read, with the model card's pair template (dear-p).
    With --server the reference comes from inference servers instead (e.g. vLLM serving the bf16
    checkpoint on a GPU node); CHECKPOINT is then a GGUF of the model (any quant) or NAME[:QUANT],
    whose tokenizer builds the prompts, and the header records the engine and its version.
    """
    if server:
        _reference_from_servers(checkpoint, out, slice_name, queries, passages, template, decoding, force,
                                run_options_for_servers(server, protocol, served_model, request_timeout))
        return
    _need_convert()
    from dear_local_convert.reference import write_reference
    from dear_local_convert.build import resolve_checkpoint
    from dear_local_convert.slices import load_slice

    ck = resolve_checkpoint(checkpoint, revision)
    ckpt, name, repo, revision = ck.path, ck.name, ck.repo, ck.revision
    adapter = ck.lora
    if lora is not None:
        from dear_local_convert.build import resolve_adapter

        adapter = resolve_adapter(lora, lora_revision)
    eval_slice = load_slice(slice_name, queries=queries, passages=passages)
    if _is_pointwise_source(ckpt, adapter):
        if template is not None or decoding is not None:
            raise typer.BadParameter("--template and --decoding choose a listwise profile; a pointwise ranker's "
                                     "reference reads pairs with its pointwise template (dear-p), so drop them")
        from dear_local_convert.reference import write_pointwise_reference

        path = write_pointwise_reference(
            ckpt, eval_slice, out, device=device, dtype=dtype, model_name=name, source_repo=repo, revision=revision,
            force=force, lora=adapter.path if adapter else None, lora_repo=adapter.repo if adapter else None,
            lora_revision=adapter.revision if adapter else None,
        )
        typer.echo(str(path))
        return
    profile = ck.profile.with_(template=template, decoding=decoding)
    path = write_reference(
        ckpt, eval_slice, profile, out, device=device, dtype=dtype, model_name=name,
        source_repo=repo, revision=revision, force=force,
        lora=adapter.path if adapter else None, lora_repo=adapter.repo if adapter else None,
        lora_revision=adapter.revision if adapter else None,
    )
    typer.echo(str(path))


def _is_pointwise_source(checkpoint: Path, adapter) -> bool:
    """A LlamaForSequenceClassification checkpoint, or any base under a SEQ_CLS adapter (DeAR-P's -lora-v1)."""
    import json

    from dear_local_convert.to_gguf.arch import is_pointwise

    try:
        if adapter is not None:
            cfg = json.loads((Path(adapter.path) / "adapter_config.json").read_text(encoding="utf-8"))
            if str(cfg.get("task_type", "")).upper() == "SEQ_CLS":
                return True
        return is_pointwise(json.loads((Path(checkpoint) / "config.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, AttributeError):
        return False  # the listwise path names what is wrong with the files


def _reference_from_servers(model, out, slice_name, queries, passages, template, decoding, force, opts) -> None:
    _need("check", CHECK_MODULES)
    from dear_local_convert.reference import write_server_reference
    from dear_local_convert.slices import load_slice

    from dear_local.fileio import refuse_overwrite
    from dear_local.reranker import Reranker

    refuse_overwrite(out, force)
    eval_slice = load_slice(slice_name, queries=queries, passages=passages)  # checked before any request
    reranker = Reranker.from_options(model, opts)
    profile = reranker.profile.with_(template=template, decoding=decoding)
    try:
        path = write_server_reference(reranker.backend, eval_slice, profile, out, model_name=_model_name(model),
                                      source=str(model), force=force)
    finally:
        reranker.close()
    typer.echo(str(path))


def _model_name(model: str) -> str | None:
    """The manifest name behind ``NAME[:QUANT]`` (what picks the gates), None for a file."""
    from dear_local.store import resolve

    resolved = resolve(model)
    return resolved.manifest.name if resolved.manifest else None


def check(
    ggufs: List[Path] = typer.Argument(
        ..., help="GGUF files to check; BASE.gguf+ADAPTER.gguf runs BASE with a GGUF LoRA adapter applied at run time."
    ),
    reference_file: Path = typer.Option(..., "--reference", "-r", help="Reference file from `dear-local reference`."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for report.json, report.md and agreement.png."),
    slice_name: Optional[str] = typer.Option(None, "--slice", help="Refuse the reference unless it was recorded on this slice."),
    template: TemplateOption = None,
    decoding: DecodingOption = None,
    threads: ThreadsOption = None,
    cpu_buffers: CpuBuffersOption = None,
    gate: List[str] = typer.Option(
        [], "--gate", help="Override a manifest gate, e.g. --gate min_mean_kendall_tau=0.9 (repeatable)."
    ),
    force: ForceOption = False,
) -> None:
    """Check GGUF quants against a reference: agreement, nDCG, speed and memory, with gates.

    Gates come from the reference model's manifest (see models/*.toml) and --gate.
    Exits 1 when a gate fails, after writing the report. A report already in --out is
    refused before anything runs, unless --force. A pointwise reference (DeAR-P) checks
    pointwise GGUFs: Kendall τ and Spearman of their scores, top-10 overlap, score error,
    ΔnDCG@10, documents/s and memory.
    """
    _need("check", CHECK_MODULES)  # no torch: a check runs quants through llama.cpp only
    from dear_local_convert.agreement.check import gate_failure, run_check
    from dear_local_convert.agreement.gates import parse_gate_overrides
    from dear_local_convert.agreement.report import summary

    from dear_local_convert.reference import is_pointwise_reference

    if is_pointwise_reference(reference_file):
        if template is not None or decoding is not None:
            raise typer.BadParameter("--template and --decoding confirm a listwise reference's profile; this "
                                     "reference is a pointwise ranker's, so drop them")
        from dear_local_convert.agreement.check import run_pointwise_check

        report, paths = run_pointwise_check(
            reference_file, ggufs, out, slice_name=slice_name, n_threads=threads,
            gate_overrides=parse_gate_overrides(gate), cpu_buffers=cpu_buffers_value(cpu_buffers), force=force,
        )
    else:
        report, paths = run_check(
            reference_file, ggufs, out, slice_name=slice_name, template=template, decoding=decoding, n_threads=threads,
            gate_overrides=parse_gate_overrides(gate), cpu_buffers=cpu_buffers_value(cpu_buffers), force=force,
        )
    typer.echo(summary(report, paths))
    failure = gate_failure(report, paths)
    if failure is not None:
        raise failure


def demo(
    queries: int = typer.Option(5, "--queries", min=1, help="NovelEval queries to use."),
    passages: int = typer.Option(10, "--passages", min=1, help="Passages per query."),
    force: ForceOption = False,
) -> None:
    """The whole pipeline on the stand-in, offline: ladder -> reference -> check -> report."""
    _need_convert()
    from dear_local_convert.demo import run_demo

    run_demo(queries=queries, passages=passages, force=force)


def register(app: typer.Typer) -> None:
    app.command()(reference)
    app.command()(check)
    app.command()(demo)
