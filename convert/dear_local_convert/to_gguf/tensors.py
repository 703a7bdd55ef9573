"""Map Hugging Face Llama tensors to GGUF tensors, and turn each one into output bytes.

The plan (names, shapes, types, byte sizes) is made from the shard headers
alone, so the GGUF header can be written before any weight is read. Then each
tensor is read, fixed up and written on its own.

Two fix-ups matter for correctness:

- HF stores q_proj/k_proj rows in the "rotate half" order of its rotary code;
  llama.cpp expects interleaved pairs. :func:`unpermute_qk` undoes HF's permutation
  (in :mod:`dear_local_convert.gguf_layout`, shared with the LoRA adapter writer).
- Norm weights and every 1-D tensor are written in F32 whatever the output type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from dear_local.errors import ConversionError

from dear_local_convert.gguf_layout import unpermute_qk
from dear_local_convert.safetensors_file import SourceTensor
from dear_local_convert.to_gguf.arch import LlamaParams

OUTTYPES = ("bf16", "f16", "f32")
SKIPPED = re.compile(r"(^|\.)rotary_emb\.inv_freq$")
SCORE_HEAD = "score.weight"  # a pointwise ranker's head (LlamaForSequenceClassification): metadata, not a tensor
BLOCK_TENSORS = (
    "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
    "ffn_norm", "ffn_gate", "ffn_up", "ffn_down",
)  # fmt: skip


@dataclass
class PlannedTensor:
    gguf_name: str
    shape: tuple[int, ...]  # numpy order (rows, cols)
    outtype: str  # "bf16", "f16" or "f32"
    source: SourceTensor | None = None  # None for computed tensors (rope_freqs)
    heads: int = 0  # > 0: undo HF's rotary permutation with this many heads
    data: np.ndarray | None = None  # computed tensors only

    @property
    def nbytes(self) -> int:
        n = int(np.prod(self.shape)) if self.shape else 1
        return n * (4 if self.outtype == "f32" else 2)


def _sort_key(name: str) -> tuple:
    m = re.match(r"blk\.(\d+)\.", name)
    if name.startswith("rope_freqs"):
        return (0, 0, name)
    if name.startswith("token_embd"):
        return (1, 0, name)
    if m:
        return (2, int(m.group(1)), name)
    return (3, 0, name)


def plan(tensors: list[SourceTensor], p: LlamaParams, outtype: str) -> list[PlannedTensor]:
    """Decide every output tensor; fail on anything unmapped or missing."""
    import gguf

    name_map = gguf.TensorNameMap(gguf.MODEL_ARCH.LLAMA, p.n_layer)
    out: dict[str, PlannedTensor] = {}
    unmapped = []
    for t in tensors:
        if SKIPPED.search(t.name) or (p.pointwise and t.name == SCORE_HEAD):
            continue
        if t.dtype not in ("BF16", "F16", "F32"):
            raise ConversionError(
                f"tensor {t.name} has dtype {t.dtype}; only BF16, F16 and F32 checkpoints can be converted"
            )
        mapped = name_map.get_type_and_name(t.name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            unmapped.append(t.name)
            continue
        kind, name = mapped
        if kind == gguf.MODEL_TENSOR.OUTPUT and (p.tied_embeddings or p.pointwise):
            continue  # tied: llama.cpp reuses token_embd; pointwise (a causal base under a SEQ_CLS adapter): unused
        heads = 0
        if kind == gguf.MODEL_TENSOR.ATTN_Q:
            heads = p.n_head
        elif kind == gguf.MODEL_TENSOR.ATTN_K:
            heads = p.n_head_kv
        one_d = len(t.shape) == 1
        if name in out:
            raise ConversionError(f"two tensors map to {name} (one is {t.name}); the checkpoint is inconsistent")
        out[name] = PlannedTensor(name, t.shape, "f32" if one_d else outtype, t, heads)
    if unmapped:
        shown = ", ".join(unmapped[:5]) + (" ..." if len(unmapped) > 5 else "")
        raise ConversionError(
            f"{len(unmapped)} tensor(s) have no llama GGUF name: {shown}; "
            "this is not a plain LlamaForCausalLM checkpoint"
        )
    _check_complete(out, p)
    freqs = p.rope_freqs()
    if freqs is not None:
        name = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"
        out[name] = PlannedTensor(name, freqs.shape, "f32", data=freqs)
    return sorted(out.values(), key=lambda t: _sort_key(t.gguf_name))


def _check_complete(out: dict[str, PlannedTensor], p: LlamaParams) -> None:
    need = ["token_embd.weight", "output_norm.weight"]
    if p.needs_output:
        need.append("output.weight")
    need += [f"blk.{b}.{n}.weight" for b in range(p.n_layer) for n in BLOCK_TENSORS]
    missing = [n for n in need if n not in out]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        hint = (
            " (config.json says the embeddings are untied, but there is no lm_head.weight)"
            if "output.weight" in missing
            else ""
        )
        raise ConversionError(
            f"the checkpoint lacks {len(missing)} tensor(s): {shown}{hint}; a shard may be missing or "
            "config.json may not match the weights"
        )
    embd = out["token_embd.weight"].shape
    if embd[0] != p.n_vocab:
        raise ConversionError(
            f"token embeddings have {embd[0]} rows but config.json says vocab_size {p.n_vocab}; "
            "the checkpoint is inconsistent"
        )


def score_head(tensors: list[SourceTensor], p: LlamaParams) -> SourceTensor:
    """The pointwise ranker's ``score.weight``, checked to be one row of ``n_embd``.

    llama.cpp refuses a llama GGUF holding a tensor its graph does not use, so the head is
    written as metadata (:attr:`dear_local.gguf_file.Keys.POINTWISE_HEAD`), not as a tensor.

    Raises:
        ConversionError: no ``score.weight``, or one of another shape.
    """
    found = [t for t in tensors if t.name == SCORE_HEAD]
    if not found:
        raise ConversionError(
            f"this LlamaForSequenceClassification checkpoint has no {SCORE_HEAD}; a shard may be missing"
        )
    return check_head(found[0], p)


def check_head(head: SourceTensor, p: LlamaParams) -> SourceTensor:
    """``head`` (a checkpoint's or a SEQ_CLS adapter's ``score.weight``), refused unless it is (1, n_embd).

    Raises:
        ConversionError: another shape, naming the tensor.
    """
    if tuple(head.shape) != (1, p.n_embd):
        raise ConversionError(
            f"{head.name} has shape {list(head.shape)}, not [1, {p.n_embd}]; dear-local converts "
            "pointwise rankers with one label for a base of this hidden size"
        )
    return head


def to_output(tensor, t: PlannedTensor) -> np.ndarray:
    """Turn one torch tensor into the contiguous numpy array written to the GGUF."""
    import torch

    if t.outtype == "bf16":
        arr = tensor.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    elif t.outtype == "f16":
        arr = tensor.to(torch.float16).numpy()
    else:
        arr = tensor.to(torch.float32).numpy()
    if t.heads:
        arr = unpermute_qk(arr, t.heads)
    return np.ascontiguousarray(arr)
