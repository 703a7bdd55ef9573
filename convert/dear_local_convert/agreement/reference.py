"""The reference run: the bf16 checkpoint in transformers, recorded once as a JSONL file.

Line 1 is a header (model, device, dtype, library versions, profile, slice and its
sha256, dear-local version). Every other line is one query: its prompt token ids
(per window), generated ids and raw text, the parsed ranking and parse status, and
the first-token log-probabilities of every candidate id in its first window.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from dear_local import __version__
from dear_local.backends.base import Backend
from dear_local.contract import Profile
from dear_local.errors import ReferenceError_
from dear_local.fileio import atomic_path, refuse_overwrite

from dear_local_convert.agreement.runs import run_queries, vocab_fingerprint

FORMAT = "dear-local-reference/1"


def write_reference(
    checkpoint: str | Path,
    eval_slice,
    profile: Profile,
    out: str | Path,
    *,
    device: str | None = None,
    dtype: str = "bf16",
    model_name: str | None = None,
    source_repo: str | None = None,
    revision: str | None = None,
    force: bool = False,
    lora: str | Path | None = None,
    lora_repo: str | None = None,
    lora_revision: str | None = None,
) -> Path:
    """Run the transformers reference over ``eval_slice`` and write the JSONL file atomically.

    ``checkpoint`` is an HF checkpoint directory; ``device`` is ``cuda``, ``cpu`` or None
    (CUDA when there is one); ``dtype`` ``bf16`` (the reference) or ``fp32``.
    ``lora`` is a PEFT LoRA adapter directory run on top of the checkpoint through PEFT;
    the header's ``model.lora`` then records its path, ``lora_repo``, ``lora_revision``
    and the sha256 of its weights (``adapter_model.safetensors``).

    Raises:
        UserInputError: ``out`` exists and ``force`` is not set; what loading the checkpoint raises.
    """
    import torch
    import transformers

    from dear_local_convert.transformers_backend.backend import TransformersBackend, device_name

    refuse_overwrite(Path(out), force)
    adapter = None
    if lora is not None:
        from dear_local_convert.lora.adapter import read_adapter

        adapter = read_adapter(lora, repo=lora_repo, revision=lora_revision)  # refuses what the GGUFs cannot hold
    backend = TransformersBackend(checkpoint, device=device, dtype=dtype, lora=lora)
    engine = {
        "device": backend.device, "device_name": device_name(backend.device), "dtype": dtype,
        "torch": torch.__version__, "transformers": transformers.__version__,
    }
    model = {"name": model_name, "checkpoint": str(checkpoint), "repo": source_repo, "revision": revision}
    if adapter is not None:
        import peft

        engine["peft"] = peft.__version__
        model["lora"] = {
            "path": str(adapter.path), "repo": adapter.repo, "revision": adapter.revision, "sha256": adapter.sha256,
            "base_model": adapter.base_model,
        }
    return record_reference(backend, eval_slice, profile, out, model=model, engine=engine, force=force)


def write_server_reference(
    backend, eval_slice, profile: Profile, out: str | Path, *, model_name: str | None = None,
    source: str | None = None, force: bool = False,
) -> Path:
    """Record the reference from inference servers (say vLLM in bf16 on a GPU node).

    ``backend`` is a :class:`~dear_local.remote.RemoteBackend`; the header names the
    engine, its version, the served model and the server URLs, in place of torch's device.

    Raises:
        UserInputError: ``out`` exists and ``force`` is not set.
        ServerError: what the servers raise.
    """
    refuse_overwrite(Path(out), force)
    info = backend.engine
    engine = {
        "device": "server", "device_name": f"{info['engine']} {info['version']}", "dtype": "as served",
        "torch": None, "transformers": None,
        "engine": {**info, "servers": backend.server_urls, "protocol": backend.protocol.name},
    }
    model = {"name": model_name, "checkpoint": info.get("model"), "repo": None, "revision": None,
             "tokenizer": source}
    return record_reference(backend, eval_slice, profile, out, model=model, engine=engine, force=force)


def record_reference(
    backend: Backend, eval_slice, profile: Profile, out: str | Path, *, model: dict, engine: dict, force: bool = False
) -> Path:
    """Rank every query of ``eval_slice`` with ``backend`` and write the reference file atomically.

    ``model`` names the model (``name``, ``checkpoint``, ``repo``, ``revision``); ``engine``
    says what computed it (``device``, ``device_name``, ``dtype``, ``torch``, ``transformers``).
    Line 1 of the file is the header, then one record per query (see the module docstring).

    Raises:
        UserInputError: ``out`` exists and ``force`` is not set.
    """
    from dear_local.progress import bar

    out = Path(out)
    refuse_overwrite(out, force)
    header = {
        "type": "header",
        "format": FORMAT,
        "model": model,
        "vocab": vocab_fingerprint(backend),
        **engine,
        "profile": profile.to_dict(),
        "slice": {
            "name": eval_slice.name,
            "sha256": eval_slice.sha256,
            "queries": len(eval_slice.queries),
            "passages": eval_slice.passages_per_query,
        },
        "dear_local": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(header) + "\n")
        with bar(total=len(eval_slice.queries), desc="reference", unit="query") as pbar:
            def write(rec: dict) -> None:
                f.write(json.dumps(rec) + "\n")
                pbar.update(1)

            run_queries(backend, profile, eval_slice, write)
    return out


def read_reference(path: str | Path) -> tuple[dict, list[dict]]:
    """Load a reference file; refuse a corrupt or foreign one with a clear message."""
    path = Path(path)
    if not path.is_file():
        raise ReferenceError_(f"reference file {path} does not exist; create it with `dear-local reference`")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    try:
        rows = [json.loads(line) for line in lines if line.strip()]
    except json.JSONDecodeError as exc:
        raise ReferenceError_(
            f"{path} is corrupt (line {exc.lineno if hasattr(exc, 'lineno') else '?'} is not JSON); "
            "recreate it with `dear-local reference`"
        ) from None
    if not rows or rows[0].get("type") != "header" or rows[0].get("format") != FORMAT:
        raise ReferenceError_(f"{path} is not a dear-local reference file ({FORMAT}); recreate it with `dear-local reference`")
    header, queries = rows[0], rows[1:]
    if len(queries) != header.get("slice", {}).get("queries") or any(q.get("type") != "query" for q in queries):
        raise ReferenceError_(
            f"{path} is incomplete or corrupt: the header promises {header.get('slice', {}).get('queries')} "
            f"queries but it holds {len(queries)}; recreate it with `dear-local reference`"
        )
    return header, queries
