"""Comparing two token id sequences: where they first part.

Used wherever dear-local refuses a tokenizer that disagrees with another (a GGUF
against its checkpoint, a quant against the reference, an inference server
against the local model) and says where the ids start to differ.
"""

from __future__ import annotations

from typing import Sequence


def first_difference(a: Sequence[int], b: Sequence[int]) -> int | None:
    """The first index where ``a`` and ``b`` differ; the shorter length when one is a prefix of the other.

    Returns None when the two are equal. Works on any sequences (token ids, tokens as text).
    """
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))
