"""A Hugging Face checkpoint on disk: its safetensors shards, checked before anything is written.

Tensors are read one at a time. Each read opens its shard afresh and closes it
afterwards, so the memory-mapped pages of a multi-gigabyte shard never pile up
in the process: peak memory stays near one tensor, whatever the model size.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from dear_local.errors import ConversionError, missing_extra

PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt")


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


def _shard_files(src_dir: Path) -> list[Path]:
    index = src_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as exc:
            raise ConversionError(f"{index} is corrupt ({exc}); re-download the checkpoint") from exc
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if not (src_dir / n).is_file()]
        if missing:
            raise ConversionError(
                f"{src_dir} is missing shard(s) {', '.join(missing)} named in {index.name}; "
                "re-download the checkpoint"
            )
        return [src_dir / n for n in names]
    shards = sorted(src_dir.glob("*.safetensors"))
    if shards:
        return shards
    pickled = sorted(p.name for pattern in PICKLED_WEIGHTS for p in src_dir.glob(pattern))
    if pickled:
        raise ConversionError(
            f"{src_dir} holds only pickled weights ({', '.join(pickled[:3])}); dear-local refuses them "
            "because loading a pickle can run arbitrary code. Use a checkpoint with .safetensors "
            "weights (most Hub repos have one, or convert it with safetensors' own tooling)"
        )
    raise ConversionError(f"{src_dir} has no .safetensors weights; pass a Hugging Face checkpoint directory")


def scan(src_dir: Path) -> list[SourceTensor]:
    """List every tensor of the checkpoint, checking each shard's header covers its file.

    A truncated or corrupt shard fails here, before any output exists.
    """
    out: list[SourceTensor] = []
    for shard in _shard_files(Path(src_dir)):
        out.extend(scan_file(shard))
    return out


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
    """Yield one tensor as a torch tensor (memory-mapped); the shard closes on exit.

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
