"""A Hugging Face checkpoint on disk: its safetensors shards, checked before anything is written.

Tensors are read one at a time, through :mod:`dear_local_convert.safetensors_file` (shared with
the LoRA code): peak memory stays near one tensor, whatever the model size.
"""

from __future__ import annotations

import json
from pathlib import Path

from dear_local.errors import ConversionError

from dear_local_convert.safetensors_file import SourceTensor, open_tensor, scan_file

__all__ = ["PICKLED_WEIGHTS", "SourceTensor", "open_tensor", "scan", "scan_file"]

PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt")


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
