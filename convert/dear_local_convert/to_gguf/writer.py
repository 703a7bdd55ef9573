"""Convert a bf16 Hugging Face Llama checkpoint into a GGUF file, one tensor at a time.

Everything is checked before the output exists: the architecture, the
tokenizer (and its pre-tokenizer), every shard header, every tensor name. Then
the GGUF header and tensor index are written from the plan, and each tensor is
read, fixed up and appended on its own, so peak memory stays near the largest
single tensor. The file is written as ``<name>-<OUTTYPE>.gguf.partial`` and
renamed when complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from dear_local.errors import ConversionError, require_extra
from dear_local.fileio import atomic_path
from dear_local.gguf_file import Keys

from dear_local_convert.gguf_layout import output_path
from dear_local_convert.lora import merge
from dear_local_convert.lora.adapter import add_lora_provenance, read_adapter
from dear_local_convert.safetensors_file import open_tensor
from dear_local_convert.to_gguf import checkpoint
from dear_local_convert.to_gguf import tensors
from dear_local_convert.to_gguf.arch import parse_params, read_config
from dear_local_convert.to_gguf.tokenizer import read_tokenizer

# The names these keys were first published under; see :class:`dear_local.gguf_file.Keys`.
KEY_SOURCE_REPO = Keys.SOURCE_REPO
KEY_SOURCE_REVISION = Keys.SOURCE_REVISION
KEY_VERSION = Keys.VERSION


def _require_libs() -> None:
    require_extra("convert", "torch", "gguf", "safetensors")


def _license(src_dir: Path) -> str | None:
    """The ``license:`` field of the model card's YAML front matter, if any."""
    card = src_dir / "README.md"
    if not card.is_file():
        return None
    text = card.read_text(encoding="utf-8", errors="replace")
    m = re.match(r"---\s*\n(.*?)\n---", text, re.S)
    if not m:
        return None
    lic = re.search(r"^license:\s*(\S.*)$", m.group(1), re.M)
    return lic.group(1).strip().strip("'\"") if lic else None


def _prepare_out_dir(out_dir: Path) -> bool:
    """Create ``out_dir`` if needed and prove it is writable; return True if it was created."""
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-"):
            pass
    except OSError as exc:
        if created:
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise ConversionError(
            f"cannot write to output directory {out_dir} ({exc.strerror or exc}); "
            "choose a writable --out directory"
        ) from exc
    return created


def convert_checkpoint(
    src_dir: str | Path,
    out_dir: str | Path,
    outtype: str = "bf16",
    *,
    force: bool = False,
    pre_tokenizer: str | None = None,
    source_repo: str | None = None,
    revision: str | None = None,
    name: str | None = None,
    license: str | None = None,
    verify_tokenizer: bool = True,
    lora: str | Path | None = None,
    lora_repo: str | None = None,
    lora_revision: str | None = None,
) -> Path:
    """Convert the checkpoint in ``src_dir`` to ``out_dir/<name>-<OUTTYPE>.gguf`` and return its path.

    ``outtype`` is ``bf16`` (default, lossless for bf16 checkpoints), ``f16`` or
    ``f32``. An existing output is kept (and returned) unless ``force`` is set.
    ``pre_tokenizer`` overrides the detected llama.cpp pre-tokenizer name.
    ``source_repo``/``revision`` are recorded as provenance; ``name`` defaults to
    the repo's last path part or the directory name. With ``verify_tokenizer``
    the finished file's tokenizer is compared with the HF tokenizer on a probe
    text before the file is renamed into place.

    ``lora`` is a PEFT LoRA adapter directory to merge while converting: each adapted
    weight becomes ``W + scale · B·A`` (computed in fp32, one tensor at a time), and the
    adapter's ``lora_repo``, ``lora_revision`` and sha256 are recorded in the metadata.
    ``name`` then defaults to the adapter's name. A SEQ_CLS adapter (DeAR-P's ``-lora-v1``)
    makes the output a pointwise ranker with the adapter's ``score`` head, whether the base
    is a ``LlamaForCausalLM`` (its ``lm_head`` is then left out) or a classifier.

    Tensors are streamed one at a time (peak memory is set by the largest tensor,
    not the model); the file is written to ``.partial`` and renamed at the end.

    Raises:
        ConversionError: not a safetensors ``LlamaForCausalLM``, an unmappable tensor,
            an unknown pre-tokenizer, or a tokenizer the GGUF does not reproduce; an
            adapter that is not plain LoRA or does not fit the checkpoint (see
            :mod:`dear_local_convert.lora.adapter`).
        MissingExtraError: gguf, safetensors or transformers are not installed.
    """
    _require_libs()
    import gguf

    src_dir = Path(src_dir).expanduser()
    out_dir = Path(out_dir).expanduser()
    outtype = outtype.lower()
    if outtype not in tensors.OUTTYPES:
        raise ConversionError(f"unknown output type {outtype!r}; choose one of: {', '.join(tensors.OUTTYPES)}")
    if not src_dir.is_dir():
        raise ConversionError(f"{src_dir} is not a directory; pass a checkpoint directory or an HF repo id")
    adapter = None
    if lora is not None:
        adapter = read_adapter(lora, repo=lora_repo, revision=lora_revision)
        name = name or adapter.name
    name = name or (source_repo.rstrip("/").split("/")[-1] if source_repo else src_dir.name)
    final = output_path(out_dir, name, outtype)
    if final.exists() and not force:
        return final

    # 1. Check everything before writing anything.
    config = read_config(src_dir)
    params = parse_params(config)
    tok = read_tokenizer(src_dir, params.n_vocab, params.eos_token_ids, pre_tokenizer)
    source = checkpoint.scan(src_dir)
    if adapter is not None and adapter.pointwise:
        params = dataclasses.replace(params, pointwise=True)  # the merged model is the adapter's pointwise ranker
    planned = tensors.plan(source, params, outtype)
    if adapter is not None and adapter.pointwise:
        head = tensors.check_head(adapter.score_head, params)
    else:
        head = tensors.score_head(source, params) if params.pointwise else None
    if adapter is not None:
        adapter.check_base({t.name: t.shape for t in source}, source_repo or str(src_dir))

    # 2. Write.
    created = _prepare_out_dir(out_dir)
    file_type = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "bf16": gguf.LlamaFileType.MOSTLY_BF16,
    }[outtype]
    try:
        with atomic_path(final) as tmp:
            _write(tmp, planned, params, tok, file_type, name=name, source_repo=source_repo,
                   revision=revision, license=license or _license(src_dir), adapter=adapter, head=head)
            if verify_tokenizer:
                from dear_local_convert.to_gguf.tokenizer_check import check_gguf_tokenizer

                check_gguf_tokenizer(tmp, src_dir)
    except BaseException as exc:
        if created:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # only succeeds if we left it empty
        if isinstance(exc, OSError):
            raise ConversionError(
                f"writing {final} failed ({exc.strerror or exc}); check free disk space and permissions"
            ) from exc
        raise
    return final


def _pointwise_head(head) -> np.ndarray:
    """The score head as ``n_embd`` float32 values, read from the checkpoint."""
    import torch

    with open_tensor(head) as src:
        return src.to(torch.float32).reshape(-1).numpy().astype(np.float32)


def _write(path: Path, planned, params, tok, file_type, *, name, source_repo, revision, license, adapter=None,
           head=None) -> None:
    import gguf

    from dear_local import __version__

    from dear_local.progress import bar as progress_bar

    w = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    try:
        w.add_name(name)
        w.add_type(gguf.GGUFType.MODEL)
        if license:
            w.add_license(license)
        if source_repo:
            w.add_source_repo_url(f"https://huggingface.co/{source_repo}")
            w.add_string(Keys.SOURCE_REPO, source_repo)
        if revision:
            w.add_string(Keys.SOURCE_REVISION, revision)
        w.add_string(Keys.VERSION, __version__)
        if adapter is not None:
            add_lora_provenance(w, adapter)
        if head is not None:
            from dear_local.contract.pointwise import DEFAULT_POINTWISE_TEMPLATE
            from dear_local.gguf_file import POINTWISE

            w.add_string(Keys.KIND, POINTWISE)
            w.add_string(Keys.POINTWISE_TEMPLATE, DEFAULT_POINTWISE_TEMPLATE)
            w.add_array(Keys.POINTWISE_HEAD, [float(v) for v in _pointwise_head(head)])  # FLOAT32 elements
        w.add_file_type(file_type)
        w.add_vocab_size(params.n_vocab)
        w.add_context_length(params.n_ctx)
        w.add_embedding_length(params.n_embd)
        w.add_block_count(params.n_layer)
        w.add_feed_forward_length(params.n_ff)
        w.add_head_count(params.n_head)
        w.add_head_count_kv(params.n_head_kv)
        w.add_rope_dimension_count(params.head_dim)
        if params.head_dim != params.n_embd // params.n_head:
            w.add_key_length(params.head_dim)
            w.add_value_length(params.head_dim)
        w.add_rope_freq_base(params.rope_theta)
        w.add_layer_norm_rms_eps(params.rms_norm_eps)
        tok.add_to(w)

        for t in planned:
            raw = {"bf16": gguf.GGMLQuantizationType.BF16}.get(t.outtype)
            np_dtype = np.dtype({"bf16": "uint16", "f16": "float16", "f32": "float32"}[t.outtype])
            w.add_tensor_info(t.gguf_name, t.shape, np_dtype, t.nbytes, raw_dtype=raw)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        total = sum(t.nbytes for t in planned)
        with progress_bar(total, f"convert {path.name.removesuffix('.partial')}", unit="B") as bar:
            for t in planned:
                if t.data is not None:
                    w.write_tensor_data(t.data)
                else:
                    pair = adapter.pairs.get(t.source.name) if adapter is not None else None
                    with open_tensor(t.source) as src:
                        if pair is not None:
                            src = merge.merged_weight(src, pair)
                        arr = tensors.to_output(src, t)
                        w.write_tensor_data(arr)
                        del arr
                bar.update(t.nbytes)
        w.flush()
        if hasattr(os, "fsync"):
            for f in w.fout or []:
                os.fsync(f.fileno())
    finally:
        w.close()
