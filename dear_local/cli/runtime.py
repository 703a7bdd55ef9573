"""Runtime commands: rerank, models, pull, templates."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from ..contract import list_templates, window_spans
from ..errors import UserInputError
from ..limits import MAX_DOCUMENTS, MAX_IN_FLIGHT
from .messages import note, warn
from .options import ForceOption, ListwiseModelOption, check_model_given, flag_names, with_run_options
from ..run_options import RunOptions


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    trec = "trec"
    rank_llm = "rank_llm"


@with_run_options
def rerank(
    model: ListwiseModelOption = None,
    query: Optional[str] = typer.Option(None, "--query", "-q", help="The search query (overrides the queries in --jsonl)."),
    docs: Optional[Path] = typer.Option(
        None, "--docs", help="Text file with one document per line; a document's docid is its 0-based line number."
    ),
    jsonl: Optional[Path] = typer.Option(
        None, "--jsonl", help='JSONL (or a JSON array) of rank_llm requests {"query": {"text", "qid"}, "candidates"}, '
        'RankGPT {"query", "hits"} or {"query", "documents"} records.'
    ),
    run: Optional[Path] = typer.Option(None, "--run", help="A first-stage TREC run to rerank (with --topics and --corpus)."),
    topics: Optional[Path] = typer.Option(None, "--topics", help="Topics of the --run: qid<TAB>text lines."),
    corpus: Optional[Path] = typer.Option(
        None, "--corpus", help="Corpus of the --run: docid<TAB>text (.tsv) or Pyserini/BEIR JSONL (.jsonl), optionally .gz."
    ),
    depth: Optional[int] = typer.Option(
        None, "--depth", min=1, max=MAX_DOCUMENTS, help="Rerank each query's first N candidates (default: 100 for --run, all otherwise)."
    ),
    skip_missing: bool = typer.Option(
        False, "--skip-missing", help="Leave out --run queries the topics lack and documents the corpus lacks, with a warning."
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o",
        help="Write the output to this file (its folder must exist; without --out it goes to stdout), query by query; "
        "a run stopped part way resumes when started again with the same options (--force starts over).",
    ),
    force: ForceOption = False,
    top_n: Optional[int] = typer.Option(None, "--top-n", "-n", min=1, max=MAX_DOCUMENTS, help="Show only the best N documents."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", "-f", help="Output format."),
    in_flight: Optional[int] = typer.Option(
        None, "--in-flight", min=1, max=MAX_IN_FLIGHT,
        help="Queries reranked at once on the servers (default: 2 per --server); locally always 1.",
    ),
    strict: bool = typer.Option(
        False, "--strict",
        help="Fail (exit 1) instead of warning when a quarter or more of the windows gave no readable ranking.",
    ),
    options: RunOptions = RunOptions(),
) -> None:
    """Rerank documents for a query with a local GGUF model, or on inference servers (--server).

    Documents come from --docs (one per line), --jsonl (one query per record; the file's shape is
    detected), a first-stage --run with --topics and --corpus, or stdin. With --server the model
    runs on llama-server, vLLM or SGLang (repeat --server for a fleet), several queries at once;
    --model names the local GGUF whose tokenizer builds the prompts. With --first-stage, a pointwise
    ranker (DeAR-P) scores every candidate first and --model reorders its top --listwise-depth.
    """
    from ..batch import check_requests
    from ..reranker import Reranker

    check_model_given(model, options)
    if out is not None:  # before the inputs are read and the model loads
        from ..fileio import check_writable, refuse_output_file
        from ..formats.resumable import refuse_busy

        if str(out) == "-":
            raise UserInputError("--out - would write a file named '-'; leave --out out to write to stdout")
        if not out.parent.exists():
            raise UserInputError(f"--out {out}: folder {out.parent} does not exist; create it first (mkdir -p)")
        refuse_output_file(out, force)
        check_writable(out.parent, target=out)
        refuse_busy(out)
    requests = _requests(query, docs, jsonl, run, topics, corpus, depth, skip_missing)
    check_requests(requests, fmt.value, depth)  # ids, duplicates, document counts: before any query runs
    with flag_names():
        reranker = Reranker.from_options(model, options)
    todo = list(enumerate(requests))
    sink = None
    if out is not None:
        from ..formats.resumable import ResumableOutput

        qids = [r.qid for r in requests]
        if run is not None and depth is None:
            from ..formats.first_stage import DEFAULT_DEPTH

            depth = DEFAULT_DEPTH  # the same job as --depth 100
        key = _run_key(reranker, model, fmt.value, requests, top_n, depth=depth, skip_missing=skip_missing,
                       lora=options.lora, lora_scale=options.lora_scale, served_model=options.served_model,
                       **_flash_attn_key(options))
        sink = ResumableOutput(out, key, force=force, qids=qids)
        if sink.done:
            note(f"resuming {out}: {len(sink.done)} of {len(requests)} queries were already written")
            skip = sink.done_positions
            todo = [(i, r) for i, r in todo if i not in skip]
    _run(reranker, todo, sink, fmt.value, top_n, in_flight or 2 * len(options.servers), strict)
    if sink is not None:
        sink.finish()


def _flash_attn_key(options: RunOptions) -> dict:
    """``{"flash_attn": True}`` when a local model runs with flash attention (it can move logits a little)."""
    from ..settings import get_settings

    on = options.flash_attn if options.flash_attn is not None else get_settings().flash_attn
    return {"flash_attn": True} if on and not options.servers else {}


def _run_key(reranker, model: str, fmt: str, requests: list, top_n, **options) -> dict:
    """Everything the output of ``rerank --out`` depends on, for the resume journal."""
    import dataclasses
    import hashlib
    import json

    from ..formats.resumable import file_identity, requests_digest, run_key
    from ..store import resolve

    p = reranker.profile
    template = json.dumps(dataclasses.asdict(p.tmpl), sort_keys=True)
    lora, lora_scale = options.pop("lora"), options.pop("lora_scale")
    # The model is the file it resolves to (real path, size, mtime), not how -m spelled it:
    # a name, NAME:QUANT, its path or other case resume the same run.
    model_file = file_identity(resolve(model).path) if model is not None else None
    if reranker.first_stage is not None:  # only then: runs started before first stages existed still resume
        options["first_stage"] = {"model": file_identity(reranker.first_stage.path)}
        if model is not None:  # the depth only matters when a listwise model reorders the top
            options["first_stage"]["listwise_depth"] = reranker.options.listwise_depth
    return run_key(
        fmt, model_file["path"] if model_file else None, p.to_dict(), [r.qid for r in requests], top_n,
        inputs_sha256=requests_digest(requests),
        model_file=model_file,
        template_text=hashlib.sha256(template.encode("utf-8")).hexdigest(),
        lora=None if lora is None else {"adapter": file_identity(lora), "scale": lora_scale},
        **options,
    )


def _run(reranker, todo: list, sink, fmt: str, top_n: int | None, in_flight: int, strict: bool = False) -> None:
    """Rerank ``todo`` (input position, request) pairs, writing each query as it finishes.

    Unparsed answers are tallied over the run (:mod:`dear_local.answer_check`): past the threshold
    a warning goes to stderr at the end, or, with ``strict``, the run stops before writing the
    query that crossed it.
    """
    from ..answer_check import ParseTally, UnparsedAnswersError
    from ..backends.base import capabilities_of
    from ..batch import run_batch
    from ..fileio import stdout_errors
    from ..formats.results import render
    from ..progress import bar

    p = reranker.profile
    counts_errors = reranker.backend is not None and capabilities_of(reranker.backend).request_errors
    listwise = reranker.backend is not None
    if not listwise:  # a pointwise ranking alone: no windows, the bar counts queries
        total, unit = len(todo), "query"
    else:
        depth = reranker.options.listwise_depth if reranker.first_stage is not None else None
        total = sum(len(window_spans(min(len(r.documents), depth) if depth is not None else len(r.documents),
                                     p.window, p.stride)) for _, r in todo)
        unit = "window"
    done = 0
    tally = ParseTally()

    def finished(pos: int, req, resp) -> None:
        nonlocal done
        tally.add(resp.windows)
        if strict and tally.failing:
            raise UnparsedAnswersError(f"query {req.qid}: " + tally.message())
        lines = list(render([(req, resp)], fmt, p))
        if sink is None:
            with stdout_errors("free some space, or pass --out FILE (a run that stops resumes)"):
                typer.echo("\n".join(lines))
        else:
            sink.write(req.qid, lines, pos)
        _warn_truncated([(req, resp)], p, reranker)
        done += 1
        if not listwise:
            pbar.update(1)
        if counts_errors:
            pbar.set_postfix_str(f"queries {done}/{len(todo)}, errors {reranker.backend.request_error_count()}",
                                 refresh=False)

    with bar(total=total, desc="reranking", unit=unit, disable=total < 2) as pbar:
        try:
            run_batch(reranker, todo, finished, in_flight=in_flight, top_n=top_n, on_window=lambda _w: pbar.update(1))
        finally:
            if sink is not None and done < len(todo):
                sink.close()
                note(f"stopped with {len(sink.done)} queries written to {sink.partial}; run the same "
                     "command again to resume")
    if tally.failing:
        warn(tally.message() + "; --strict makes this an error")


def _warn_truncated(outputs, profile, reranker=None) -> None:
    """One stderr warning per query whose documents were cut to the templates' limits."""
    from ..prompt import truncation_warning

    pointwise = reranker.first_stage.template if reranker is not None and reranker.first_stage is not None else None
    listwise = reranker is None or reranker.backend is not None
    for req, resp in outputs:
        docids = [req.docids[i] for i, cut in enumerate(resp.ranking.truncated) if cut]
        if docids:
            warn(f"query {req.qid}: "
                 f"{truncation_warning(profile.tmpl, docids, 'docid', pointwise=pointwise, listwise=listwise)}")


def _requests(query, docs, jsonl, run, topics, corpus, depth, skip_missing) -> list:
    """The queries and documents to rerank, from whichever input the options name; checked before loading."""
    from .. import inputs

    sources = [name for name, given in (("--docs", docs), ("--jsonl", jsonl), ("--run", run)) if given is not None]
    if len(sources) > 1:
        raise UserInputError(f"pass one of --docs, --jsonl or --run, not {' and '.join(sources)}")
    if run is not None:
        from ..formats.first_stage import DEFAULT_DEPTH, requests_from_run

        if topics is None or corpus is None:
            raise UserInputError("--run needs --topics (qid<TAB>text) and --corpus (docid<TAB>text or JSONL)")
        if query is not None:
            raise UserInputError("--query does not go with --run; the queries come from --topics")
        requests = requests_from_run(
            run, topics, corpus, DEFAULT_DEPTH if depth is None else depth,
            skip_missing=skip_missing, warn=warn,
        )
    elif topics is not None or corpus is not None or skip_missing:
        raise UserInputError("--topics, --corpus and --skip-missing go with --run; pass the first-stage run too")
    elif jsonl is not None:
        source = "stdin" if str(jsonl) == "-" else str(jsonl)
        requests = inputs.jsonl_requests(inputs.read_text(jsonl, sys.stdin.buffer), source, query)
    else:
        stdin = sys.stdin.buffer if str(docs) == "-" or (docs is None and not sys.stdin.isatty()) else None
        requests = [inputs.read_lines_request(docs, stdin, query, depth)]
    if not requests:
        raise UserInputError(f"{jsonl} holds no records")
    if depth is not None and run is None:
        if depth < 1:
            raise UserInputError(f"--depth must be at least 1, got {depth}")
        for req in requests:
            req.documents, req.docids = req.documents[:depth], req.docids[:depth]
    for req in requests:
        if not req.query.strip():
            raise UserInputError(f"query {req.qid} is empty; pass a non-empty --query")
        if not req.documents:
            raise UserInputError(f"query {req.qid} has no documents to rerank")
    return requests


def templates() -> None:
    """List the prompt templates."""
    for t in list_templates():
        typer.echo(f"{t.name:14} {t.description}")


def models() -> None:
    """List the known models and what is downloaded or built locally."""
    from ..settings import get_settings
    from ..store import list_manifests, local_artifacts
    from ..terminal import printable

    typer.echo(f"model store: {printable(str(get_settings().models_dir))}")
    for m in list_manifests():
        typer.echo(f"\n{printable(m.name)}  ({printable(str(m.description))})")
        if m.kind == "pointwise":
            typer.echo(f"  pointwise ranker (use as --first-stage), default quant {printable(str(m.default_quant))}")
        else:
            typer.echo(f"  profile: {printable(f'{m.profile.template}/{m.profile.decoding}')}, "
                       f"default quant {printable(str(m.default_quant))}")
        typer.echo(f"  quants: {printable(', '.join(m.known_quants()))}")
        if m.lora:
            typer.echo(printable(f"  LoRA adapter {m.lora['repo']} merged into {m.hf_repo} (`dear-local build {m.name}`)"))
        files = local_artifacts(m)
        if not files:
            typer.echo("  local: none")
        for f in files:
            typer.echo(f"  local: {printable(f.name)}  {f.stat().st_size / 2**20:.1f} MiB")


def pull(
    ref: str = typer.Argument(..., help="NAME[:QUANT], e.g. smollm2-135m-instruct or dear-8b-listwise."),
    force: ForceOption = False,
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

