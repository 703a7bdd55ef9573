"""A safetensors file, read from its header and then one tensor at a time.

Shared by the checkpoint converter (:mod:`dear_local_convert.to_gguf`, a checkpoint's shards)
and the LoRA code (:mod:`dear_local_convert.lora`, an adapter's weights). Each read opens its
file afresh and closes it afterwards, so the memory-mapped pages of a multi-gigabyte shard
never pile up in the process: peak memory stays near one tensor, whatever the model size.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from dear_local.errors import ConversionError, missing_extra


@dataclass(frozen=True)
class SourceTensor:
    name: str  # the Hugging Face name, e.g. model.layers.0.self_attn.q_proj.weight
    shard: Path
    shape: tuple[int, ...]
    dtype: str  # safetensors dtype name: BF16, F16, F32


def _safe_open():
    try:
        from safetensors import safe_open
    except ImportError as exc:  # pragma: no cover - safetensors comes with the convert extra
        raise missing_extra("safetensors", "convert") from exc
    return safe_open


def scan_file(shard: Path, what: str = "shard") -> list[SourceTensor]:
    """List the tensors of one safetensors file (names, shapes, dtypes), from its header.

    ``what`` names the file in the error message ("shard", "adapter").

    Raises:
        ConversionError: the file is truncated or corrupt.
    """
    safe_open = _safe_open()
    out: list[SourceTensor] = []
    try:
        with safe_open(shard, framework="pt") as f:
            for key in f.keys():
                s = f.get_slice(key)
                out.append(SourceTensor(key, shard, tuple(s.get_shape()), s.get_dtype()))
    except Exception as exc:  # safetensors raises its own SafetensorError (and OSError)
        raise ConversionError(
            f"{what} {shard.name} is truncated or corrupt ({exc}); delete it and download it again"
        ) from exc
    return out


@contextlib.contextmanager
def open_tensor(t: SourceTensor) -> Iterator["object"]:
    """Yield one tensor as a torch tensor (memory-mapped); the file closes on exit.

    Use the tensor only inside the ``with`` block.
    """
    safe_open = _safe_open()
    try:
        f = safe_open(t.shard, framework="pt")
    except Exception as exc:
        raise ConversionError(f"cannot read shard {t.shard.name} ({exc}); download it again") from exc
    with f:
        try:
            tensor = f.get_tensor(t.name)
        except Exception as exc:
            raise ConversionError(
                f"cannot read tensor {t.name} from {t.shard.name} ({exc}); the shard is corrupt, "
                "download it again"
            ) from exc
        yield tensor
        del tensor
