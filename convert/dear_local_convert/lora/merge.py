"""Fold a LoRA pair into its base weight while converting: ``W + scale · B·A``, in fp32.

Called once per adapted tensor from the converter's write loop, so only one base
weight and its pair are in memory at a time: a merged conversion peaks where a plain
one does, plus one fp32 copy of the largest adapted weight.
"""

from __future__ import annotations

from dear_local_convert.lora.adapter import LoraPair
from dear_local_convert.safetensors_file import open_tensor


def merged_weight(weight, pair: LoraPair):
    """``weight`` (a torch tensor, shape (out, in), any float dtype) plus ``pair.scale · B·A``.

    Returns a new fp32 torch tensor of the same shape; ``weight`` is not modified.
    The product and the sum are computed in fp32 whatever the stored dtypes.

    Raises:
        ConversionError: an adapter tensor cannot be read.
    """
    import torch

    out = weight.to(torch.float32, copy=True)
    with open_tensor(pair.a) as a, open_tensor(pair.b) as b:
        out.addmm_(b.to(torch.float32), a.to(torch.float32), alpha=pair.scale)
    return out
