"""A PEFT LoRA adapter -> llama.cpp's GGUF LoRA adapter, checked against the base GGUF it will run on.

The file llama.cpp's adapter API (``llama_adapter_lora_init``) loads:

- metadata ``general.type = adapter``, ``adapter.type = lora``, ``adapter.lora.alpha``
  and ``general.architecture`` (``llama``, which must equal the base's);
- for each adapted weight ``W`` named ``blk.N.<tensor>.weight`` in the base GGUF, the
  tensors ``blk.N.<tensor>.weight.lora_a`` (numpy shape (r, in), PEFT's ``lora_A``) and
  ``blk.N.<tensor>.weight.lora_b`` (shape (out, r), PEFT's ``lora_B``).

llama.cpp adds ``s · alpha / r · B·(A·x)`` to ``W·x``, where ``s`` is the scale given at
run time and ``r`` is each pair's rank. PEFT's own scale (``alpha / r``, or
``alpha / sqrt(r)`` with rsLoRA, with per-module ``alpha_pattern``) is matched by
multiplying ``lora_b`` by the ratio where they differ, in fp32. The rows of ``lora_b``
for ``q_proj`` and ``k_proj`` get the same rotary reordering the converter applies to
the base weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dear_local.errors import ConversionError, InvalidModelFileError, ModelNotFoundError, require_extra
from dear_local.fileio import atomic_path
from dear_local.gguf_file import Keys, check_tensor_data, read_header

from dear_local_convert.gguf_layout import output_path, unpermute_qk
from dear_local_convert.lora.adapter import Adapter, add_lora_provenance, read_adapter
from dear_local_convert.safetensors_file import open_tensor

OUTTYPES = ("f32", "f16", "bf16")
KEY_ADAPTER_BASE = Keys.LORA_BASE_GGUF  # its first name; see dear_local.gguf_file.Keys


class BaseGGUF:
    """What the adapter needs from the base GGUF: architecture, head counts and weight shapes.

    Read from the header alone (:func:`dear_local.gguf_file.read_header`): the
    vocabulary and the tensor data are stepped over.
    """

    def __init__(self, path: Path) -> None:
        fix = "pass the base model's GGUF from `dear-local convert`"
        try:
            header = read_header(path, what="base GGUF", fix=fix)
            check_tensor_data(header, what="base GGUF", fix=fix)
        except (InvalidModelFileError, ModelNotFoundError) as exc:
            raise ConversionError(str(exc)) from None
        self.path = path
        val = header.get

        if val("general.type", "model") == "adapter":
            raise ConversionError(f"{path} is itself an adapter; --base takes the base model's GGUF")
        self.arch = val("general.architecture")
        if self.arch != "llama":
            raise ConversionError(f"{path} has architecture {self.arch!r}; dear-local's LoRA adapters are for llama models")
        self.name = val("general.name") or path.stem
        try:
            self.n_layer = int(val("llama.block_count"))
            self.n_head = int(val("llama.attention.head_count"))
            self.n_head_kv = int(val("llama.attention.head_count_kv", self.n_head))
        except (TypeError, ValueError):
            raise ConversionError(
                f"{path} lacks llama's block and head counts; {fix}"
            ) from None
        # numpy order (rows, cols) = Hugging Face's (out, in); GGUF stores the reverse
        self.shapes = {t.name: tuple(reversed(t.shape)) for t in header.tensors}


def _hf_weights(base: BaseGGUF) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[str, int]]]:
    """The base's projection weights under their Hugging Face names: shapes, and (GGUF name, q/k heads)."""
    import gguf

    name_map = gguf.TensorNameMap(gguf.MODEL_ARCH.LLAMA, base.n_layer)
    projections = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                   "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")  # fmt: skip
    hf_names = ["model.embed_tokens.weight", "lm_head.weight"]
    hf_names += [f"model.layers.{i}.{p}.weight" for i in range(base.n_layer) for p in projections]
    shapes, where = {}, {}
    for hf in hf_names:
        kind, name = name_map.get_type_and_name(hf, try_suffixes=(".weight",))
        if name not in base.shapes:
            continue
        heads = {gguf.MODEL_TENSOR.ATTN_Q: base.n_head, gguf.MODEL_TENSOR.ATTN_K: base.n_head_kv}.get(kind, 0)
        shapes[hf] = base.shapes[name]
        where[hf] = (name, heads)
    return shapes, where


def _array(tensor, outtype: str) -> tuple[np.ndarray, object]:
    """A fp32 torch tensor -> (numpy array, gguf raw dtype or None) in ``outtype``."""
    import gguf
    import torch

    if outtype == "bf16":
        return tensor.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16), gguf.GGMLQuantizationType.BF16
    if outtype == "f16":
        return tensor.to(torch.float16).numpy(), None
    return tensor.to(torch.float32).numpy(), None


def convert_adapter(
    adapter_dir: str | Path,
    base_gguf: str | Path,
    out_dir: str | Path,
    outtype: str | None = None,
    *,
    force: bool = False,
    name: str | None = None,
    repo: str | None = None,
    revision: str | None = None,
) -> Path:
    """Write the PEFT adapter in ``adapter_dir`` as ``out_dir/<name>-<OUTTYPE>.gguf``; return its path.

    ``base_gguf`` is the GGUF of the model the adapter will be applied to (any quant of
    it): the adapter is checked against its shapes and takes its head counts.
    ``outtype`` is ``f32``, ``f16`` or ``bf16`` (default: the adapter's own dtype, so
    nothing is rounded). An existing output is kept (and returned) unless ``force``.
    ``repo``/``revision`` are recorded as provenance, with the adapter's sha256.
    Written to ``.partial`` and renamed when complete.

    Raises:
        ConversionError: an adapter that is not plain LoRA, one that does not fit the
            base, a base that is not a llama GGUF, an unwritable output.
        MissingExtraError: gguf, torch, safetensors or peft are not installed.
    """
    require_extra("convert", "torch", "gguf", "safetensors", "peft")

    base_path = Path(base_gguf).expanduser()
    if base_path.is_dir():
        raise ConversionError(f"--base {base_path} is a directory; pass the base model's GGUF file (convert the "
                              "checkpoint first with `dear-local convert`)")
    if not base_path.is_file():
        raise ConversionError(f"base GGUF {base_path} does not exist; pass the GGUF the adapter will run on with --base")
    adapter = read_adapter(adapter_dir, repo=repo, revision=revision)
    if adapter.pointwise:
        raise ConversionError(
            "this is a SEQ_CLS (pointwise ranker) adapter: its trained score head cannot travel in a llama.cpp LoRA "
            "file; merge it while converting instead (dear-local convert BASE --lora ADAPTER)"
        )
    outtype = (outtype or adapter.dtype).lower()
    if outtype not in OUTTYPES:
        raise ConversionError(f"unknown output type {outtype!r}; choose one of: {', '.join(OUTTYPES)}")
    base = BaseGGUF(base_path)
    shapes, where = _hf_weights(base)
    adapter.check_base(shapes, base_path.name)
    name = name or adapter.name
    final = output_path(out_dir, name, outtype)
    if final.exists() and not force:
        return final
    try:
        with atomic_path(final) as tmp:
            _write(tmp, adapter, base, where, outtype, name)
    except OSError as exc:
        raise ConversionError(f"writing {final} failed ({exc.strerror or exc}); check free disk space and permissions") from exc
    return final


def _write(path: Path, adapter: Adapter, base: BaseGGUF, where: dict, outtype: str, name: str) -> None:
    import gguf
    import torch

    from dear_local import __version__

    w = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    try:
        w.add_name(name)
        w.add_type(gguf.GGUFType.ADAPTER)
        w.add_string(gguf.Keys.Adapter.TYPE, "lora")
        w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, adapter.alpha)
        w.add_string(Keys.VERSION, __version__)
        w.add_string(Keys.LORA_BASE_GGUF, base.name)
        add_lora_provenance(w, adapter)
        for hf_name, pair in sorted(adapter.pairs.items(), key=lambda kv: where[kv[0]][0]):
            gguf_name, heads = where[hf_name]
            # llama.cpp scales by alpha / rank; PEFT's scale may differ (rsLoRA, alpha_pattern)
            factor = pair.scale / (adapter.alpha / pair.rank)
            with open_tensor(pair.a) as a, open_tensor(pair.b) as b:
                a32 = a.to(torch.float32)
                b32 = b.to(torch.float32) * factor if factor != 1.0 else b.to(torch.float32)
                arr_a, raw = _array(a32, outtype)
                arr_b, _ = _array(b32, outtype)
            if heads:
                arr_b = unpermute_qk(arr_b, heads)
            w.add_tensor(f"{gguf_name}.lora_a", np.ascontiguousarray(arr_a), raw_dtype=raw)
            w.add_tensor(f"{gguf_name}.lora_b", np.ascontiguousarray(arr_b), raw_dtype=raw)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.flush()
    finally:
        w.close()
