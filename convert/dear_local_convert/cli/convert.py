"""Conversion commands: convert, convert-lora, quantize, build. They need the 'convert' extra.

The heavy imports (torch, transformers, gguf) happen inside each command, so
``dear-local --help`` and the runtime commands stay fast and work without them.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from dear_local.cli.options import ForceOption, ThreadsOption
from dear_local.errors import missing_extra, require_extra


class OutType(str, Enum):
    bf16 = "bf16"
    f16 = "f16"
    f32 = "f32"


def _need_convert_extra() -> None:
    require_extra("convert", "torch", "gguf", "safetensors")


def convert(
    src: str = typer.Argument(..., help="A local checkpoint directory, or a Hugging Face repo id (owner/name)."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write <name>-<OUTTYPE>.gguf into."),
    outtype: OutType = typer.Option(OutType.bf16, "--outtype", help="Tensor type of the output; bf16 keeps a bf16 checkpoint exact."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Branch, tag or commit to download (repo ids only); default: main."),
    pre_tokenizer: Optional[str] = typer.Option(
        None, "--pre-tokenizer",
        help="llama.cpp pre-tokenizer name to use when the one in tokenizer.json is not recognised (e.g. llama-bpe, smollm).",
    ),
    name: Optional[str] = typer.Option(
        None, "--name", help="Model name for the file and its metadata (default: from SRC, or from --lora)."
    ),
    lora: Optional[str] = typer.Option(
        None, "--lora",
        help="A PEFT LoRA adapter (directory or HF repo id) to merge into SRC while converting.",
    ),
    lora_revision: Optional[str] = typer.Option(None, "--lora-revision", help="Branch, tag or commit of a --lora repo id."),
    force: ForceOption = False,
) -> None:
    """Convert a Hugging Face LlamaForCausalLM checkpoint (safetensors) to GGUF.

    Tensors are streamed one at a time, so memory stays near one tensor whatever the model
    size. The output is written to a .partial file and renamed when complete, and its
    tokenizer is checked against tokenizer.json before it is kept.

    With --lora, each weight the adapter's adapter_config.json targets becomes
    W + scale·B·A (scale = alpha/r, or alpha/sqrt(r) for rsLoRA), computed in fp32 as the
    tensor streams past, and the adapter's repo, revision and sha256 go into the metadata.
    A SEQ_CLS adapter (DeAR-P's -lora-v1: LoRA pairs plus a trained score head) makes a
    pointwise ranker GGUF, on a LlamaForCausalLM base too. DoRA, adapters on the embeddings
    or lm_head, other modules_to_save and adapters made for a base of other shapes are refused.
    """
    _need_convert_extra()
    from dear_local_convert.to_gguf.writer import convert_checkpoint, output_path

    from dear_local.store import pull_checkpoint

    adapter = None
    if lora is not None:
        from dear_local_convert.build import resolve_adapter

        adapter = resolve_adapter(lora, lora_revision)
    elif lora_revision:
        raise typer.BadParameter("--lora-revision goes with --lora")
    path = Path(src).expanduser()
    repo = None
    if path.is_dir():
        if revision:
            raise typer.BadParameter("--revision applies to repo ids only, not local directories")
    else:
        if src.count("/") != 1 or src.startswith((".", "/", "~")):
            raise typer.BadParameter(f"{src} is neither a directory nor an owner/name repo id", param_hint="SRC")
        repo = src
        typer.echo(f"downloading {repo}@{revision or 'main'} (safetensors, JSON and tokenizer files only) ...", err=True)
        path = pull_checkpoint(repo, revision)
        revision = path.name  # the snapshot directory is named by the resolved commit
    name = name or ((adapter.repo or str(adapter.path)).rstrip("/").split("/")[-1] if adapter else None)
    name = name or (repo.split("/")[-1] if repo else path.name)
    final = output_path(out, name, outtype.value)
    if final.exists() and not force:
        typer.echo(f"kept existing {final} (pass --force to rebuild it)")
        return
    result = convert_checkpoint(
        path, out, outtype.value, force=force, pre_tokenizer=pre_tokenizer,
        source_repo=repo, revision=revision, name=name,
        lora=adapter.path if adapter else None, lora_repo=adapter.repo if adapter else None,
        lora_revision=adapter.revision if adapter else None,
    )
    typer.echo(f"wrote {result} ({result.stat().st_size / 1e9:.2f} GB)")


def convert_lora(
    adapter: str = typer.Argument(..., help="A PEFT LoRA adapter: a directory (adapter_config.json + safetensors) or an HF repo id."),
    base: Path = typer.Option(..., "--base", help="The base model's GGUF the adapter will run on (any quant of it)."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write <name>-<OUTTYPE>.gguf into."),
    outtype: Optional[OutType] = typer.Option(
        None, "--outtype", help="Tensor type of the adapter (default: the adapter's own, so nothing is rounded)."
    ),
    revision: Optional[str] = typer.Option(None, "--revision", help="Branch, tag or commit of an ADAPTER repo id."),
    name: Optional[str] = typer.Option(None, "--name", help="Name for the file and its metadata (default: from ADAPTER)."),
    force: ForceOption = False,
) -> None:
    """Convert a PEFT LoRA adapter to llama.cpp's GGUF LoRA format, to apply at run time.

    The result goes with `--lora` to rerank and serve (and `Reranker(..., lora=...)`), so one
    quantized base serves several adapters. It is checked against --base's shapes; the same
    adapter settings as `convert --lora` are refused.
    """
    _need_convert_extra()
    from dear_local_convert.build import resolve_adapter
    from dear_local_convert.lora.gguf_adapter import convert_adapter

    src = resolve_adapter(adapter, revision)
    result = convert_adapter(
        src.path, base, out, outtype.value if outtype else None, force=force, name=name,
        repo=src.repo, revision=src.revision,
    )
    typer.echo(f"wrote {result} ({result.stat().st_size / 1e6:.1f} MB)")


def quantize(
    gguf: Path = typer.Argument(..., help="The BF16/F16/F32 GGUF written by `dear-local convert`."),
    types: str = typer.Option(
        "Q8_0,Q6_K,Q5_K_M,Q4_K_M,IQ4_XS,Q3_K_M,Q2_K", "--types", "-t",
        help="Comma-separated quant types to write (e.g. Q8_0,Q4_K_M).",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for <name>-<TYPE>.gguf files and manifest.json."),
    threads: ThreadsOption = None,
    force: ForceOption = False,
    imatrix: Optional[Path] = typer.Option(
        None, "--imatrix",
        help="Importance matrix from `dear-local imatrix` (GGUF imatrix format); required for IQ3_M, IQ2_M and other IQ2/IQ1 types.",
    ),
) -> None:
    """Quantize a GGUF with llama.cpp's quantizer into one file per type, plus manifest.json.

    The manifest records each file's type, size, bits per weight, sha256, source repo and
    revision, and the dear-local and llama.cpp versions; with --imatrix, also the matrix's
    sha256 and calibration slice. Each type is recorded as it finishes: run a stopped command
    again and the types already built are kept, the rest built (--force rebuilds all).
    """
    try:
        import gguf as _gguf  # noqa: F401  (reads tensor sizes for the manifest; `gguf` is the argument)
    except ImportError as exc:
        raise missing_extra("gguf", "convert") from exc
    from dear_local_convert.quant import quantize as q

    def report(e: dict) -> None:
        typer.echo(f"{e['type']:<8} {e['bytes'] / 1e6:>9.1f} MB  {e['bits_per_weight']:.2f} bits/weight  {e['file']}")

    def kept(qtype: str, path: Path) -> None:
        typer.echo(f"{qtype:<8} already built, kept: {path.name} (--force rebuilds it)")

    q.quantize(gguf, types, out, threads=threads, force=force, imatrix=imatrix, on_file=report, on_kept=kept)
    typer.echo(f"manifest: {Path(out) / q.MANIFEST}")


def build(
    name: str = typer.Argument(..., help="A model name from `dear-local models` (e.g. dear-8b-listwise)."),
    threads: ThreadsOption = None,
    force: ForceOption = False,
    checkpoint: Optional[Path] = typer.Option(
        None, "--checkpoint", help="Use this local checkpoint directory instead of downloading the manifest's."
    ),
    lora: Optional[Path] = typer.Option(
        None, "--lora", help="Use this local PEFT adapter directory instead of downloading the manifest's [lora] adapter."
    ),
) -> None:
    """Pull a model's checkpoint, convert it to BF16 and quantize its whole ladder into the store.

    Files go to $DEAR_LOCAL_HOME/models/NAME/ as NAME-QUANT.gguf. Files already built are
    kept unless --force is given, so an interrupted build picks up where it stopped. A LoRA
    manifest (dear-8b-listwise-lora) pulls the base and the adapter and merges them while
    converting.
    """
    _need_convert_extra()
    from dear_local_convert.build import build as run_build

    result = run_build(name, force=force, threads=threads, log=lambda m: typer.echo(m, err=True),
                       checkpoint=checkpoint, lora=lora)
    typer.echo(result.table())


def register(app: typer.Typer) -> None:
    app.command()(convert)
    app.command("convert-lora")(convert_lora)
    app.command()(quantize)
    app.command()(build)
