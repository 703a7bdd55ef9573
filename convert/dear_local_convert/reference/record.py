"""Recording the reference: the bf16 checkpoint in transformers (:func:`write_reference`), or
inference servers (:func:`write_server_reference`), ranking an eval slice once into a reference file
(:mod:`dear_local_convert.reference.file`). torch and transformers are imported only when recording.
"""

from __future__ import annotations

from pathlib import Path

from dear_local.contract import Profile
from dear_local.errors import UserInputError
from dear_local.fileio import refuse_overwrite

from dear_local_convert.reference.file import record_reference


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
        if adapter.pointwise:
            raise UserInputError(
                "this is a SEQ_CLS (pointwise ranker) adapter; record a pointwise reference for it with "
                "dear-local reference --pointwise (the listwise reference decodes rankings)"
            )
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
