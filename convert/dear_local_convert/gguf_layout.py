"""How dear-local lays Hugging Face Llama weights out in the GGUF files it writes.

Shared by the checkpoint converter (:mod:`dear_local_convert.to_gguf`) and the LoRA adapter
writer (:mod:`dear_local_convert.lora.gguf_adapter`), so that an adapter's tensors match the
base model's: the file name for an output type, and the q/k rows in llama.cpp's rotary order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def output_path(out_dir: str | Path, name: str, outtype: str) -> Path:
    return Path(out_dir) / f"{name}-{outtype.upper()}.gguf"


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder q/k rows from HF's half-split rotary layout to llama.cpp's interleaved pairs.

    Each head's rows ``[x0..x(d/2-1), y0..y(d/2-1)]`` become ``[x0, y0, x1, y1, ...]``.
    Works on 2-D weights and 1-D biases, and on any dtype (it only moves rows).
    """
    rows = w.shape[0]
    return (
        w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )
