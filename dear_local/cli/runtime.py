"""Runtime commands: rerank, models, pull, templates."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from ..contract import DECODING_MODES, list_templates, window_spans
from ..errors import UserInputError


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    trec = "trec"


def rerank(
    model: str = typer.Option(..., "--model", "-m", help="A .gguf file, or NAME[:QUANT] from `dear-local models`."),
    query: Optional[str] = typer.Option(None, "--query", "-q", help="The search query (overrides the queries in --jsonl)."),
    docs: Optional[Path] = typer.Option(
        None, "--docs", help="Text file with one document per line; a document's docid is its 0-based line number."
    ),
    jsonl: Optional[Path] = typer.Option(
        None, "--jsonl", help='JSONL of {"query", "hits": [{"content", "docid"}]} or {"query", "documents"} records.'
    ),
    top_n: Optional[int] = typer.Option(None, "--top-n", "-n", help="Show only the best N documents."),
    template: Optional[str] = typer.Option(
        None, "--template", "--profile", help="Prompt template (see `dear-local templates`); default: the model's."
    ),
    decoding: Optional[str] = typer.Option(None, "--decoding", help=f"One of: {', '.join(DECODING_MODES)}."),
    window: Optional[int] = typer.Option(None, "--window", help="Passages per window (default 20)."),
    stride: Optional[int] = typer.Option(None, "--stride", help="Window stride (default 10)."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help="Output format."),
    n_threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads (default: llama.cpp's choice)."),
    n_gpu_layers: int = typer.Option(0, "--gpu-layers", help="Layers to offload to a GPU, if llama.cpp was built with one."),
    n_ctx: Optional[int] = typer.Option(None, "--n-ctx", help="Context size (default: sized from the profile)."),
) -> None:
    """Rerank documents for a query with a local GGUF model.

    Documents come from --docs (one per line), --jsonl (one query per record) or stdin.
    """
    from .. import inputs
    from ..progress import bar
    from ..reranker import Reranker

    if docs is not None and jsonl is not None:
        raise UserInputError("pass either --docs or --jsonl, not both")
    if jsonl is not None:
        requests = inputs.jsonl_requests(inputs.read_text(jsonl), str(jsonl), query)
    else:
        stdin = sys.stdin.buffer if docs is None and not sys.stdin.isatty() else None
        requests = [inputs.lines_request(inputs.read_text(docs, stdin), query)]
    if not requests:
        raise UserInputError(f"{jsonl} holds no records")
    for req in requests:
        if not req.query.strip():
            raise UserInputError(f"query {req.qid} is empty; pass a non-empty --query")
        if not req.documents:
            raise UserInputError(f"query {req.qid} has no documents to rerank")

    reranker = Reranker(
        model, template=template, decoding=decoding, window=window, stride=stride,
        n_threads=n_threads, n_gpu_layers=n_gpu_layers, n_ctx=n_ctx,
    )
    p = reranker.profile
    total = sum(len(window_spans(len(r.documents), p.window, p.stride)) for r in requests)
    outputs = []
    with bar(total=total, desc="reranking", unit="window", disable=total < 2) as pbar:
        for req in requests:
            resp = reranker.rerank(req.query, req.documents, top_n=top_n, on_window=lambda _w: pbar.update(1))
            outputs.append((req, resp))
    _print(outputs, fmt, p, model)
    from ..prompt import truncation_warning

    for req, resp in outputs:
        cut = [i for i, t in enumerate(resp.ranking.truncated) if t]
        if cut:
            docids = [req.docids[i] for i in cut]
            typer.echo(f"warning: query {req.qid}: {truncation_warning(p.tmpl, docids, 'docid')}", err=True)


def _print(outputs, fmt: OutputFormat, profile, model: str) -> None:
    if fmt is OutputFormat.json:
        for req, resp in outputs:
            typer.echo(json.dumps({
                "qid": req.qid,
                "query": req.query,
                "profile": profile.to_dict(),
                "results": [
                    {"index": r.index, "docid": req.docids[r.index], "rank": r.rank, "score": r.score,
                     "truncated": r.truncated, "text": r.text}
                    for r in resp.results
                ],
                "windows": [
                    {"start": w.start, "end": w.end, "status": w.status, "raw_output": w.raw_text,
                     "stop_reason": w.stop_reason, "model_calls": w.model_calls}
                    for w in resp.windows
                ],
            }, ensure_ascii=False))
    elif fmt is OutputFormat.trec:
        tag = "dear-local"
        for req, resp in outputs:
            n = len(req.documents)
            for r in resp.results:
                typer.echo(f"{req.qid} Q0 {req.docids[r.index]} {r.rank + 1} {n - r.rank} {tag}")
    else:
        for req, resp in outputs:
            statuses = ", ".join(sorted(set(resp.statuses))) or "ok"
            typer.echo(f"query {req.qid}: {req.query}  [{profile.template}/{profile.decoding}; parse: {statuses}]")
            typer.echo(f"{'rank':>4}  {'doc':>5}  {'score':>5}  text")
            for r in resp.results:
                text = " ".join(r.text.split())
                typer.echo(f"{r.rank + 1:>4}  {req.docids[r.index]:>5}  {r.score:5.3f}  {text[:70]}")
            typer.echo("")


def templates() -> None:
    """List the prompt templates."""
    for t in list_templates():
        typer.echo(f"{t.name:14} {t.description}")


def models() -> None:
    """List the known models and what is downloaded or built locally."""
    from ..settings import get_settings
    from ..store import list_manifests, local_artifacts

    typer.echo(f"model store: {get_settings().models_dir}")
    for m in list_manifests():
        typer.echo(f"\n{m.name}  ({m.description})")
        typer.echo(f"  profile: {m.profile.template}/{m.profile.decoding}, default quant {m.default_quant}")
        typer.echo(f"  quants: {', '.join(m.known_quants())}")
        files = local_artifacts(m)
        if not files:
            typer.echo("  local: none")
        for f in files:
            typer.echo(f"  local: {f.name}  {f.stat().st_size / 2**20:.1f} MiB")


def pull(
    ref: str = typer.Argument(..., help="NAME[:QUANT], e.g. smollm2-135m-instruct or dear-8b-listwise."),
    force: bool = typer.Option(False, "--force", help="Download again even if the file is present."),
) -> None:
    """Download a model: a published GGUF quant, or the HF checkpoint to build quants from."""
    from ..store import pull as do_pull

    path = do_pull(ref, force=force)
    typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.command()(rerank)
    app.command()(templates)
    app.command()(models)
    app.command()(pull)
