"""Bounds on llama.cpp's load settings, shared by ``LlamaCppBackend`` and the CLI's flags.

Past them llama.cpp fails with a misleading message (a negative ``n_ctx`` reads as a corrupt
file) or tries to allocate without limit.
"""

from __future__ import annotations

from ..errors import UserInputError
from ..limits import MAX_CTX, MAX_GPU_LAYERS, MAX_THREADS


def _whole(value, name: str, low: int, high: int, *, optional: bool) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UserInputError(
            f"{name} must be a whole number from {low} to {high}{' or None (the default)' if optional else ''}, "
            f"got {value!r}"
        )


def check_load_settings(*, n_ctx, n_threads, n_gpu_layers, n_batch) -> None:
    """Refuse load settings llama.cpp cannot use, naming the argument; the CLI bounds its flags alike.

    Raises:
        UserInputError: ``n_ctx`` outside 1..2**20 tokens, ``n_threads`` outside 1..1024,
            ``n_gpu_layers`` below -1 (-1: every layer), ``n_batch`` below 1, or a non-integer.
    """
    _whole(n_ctx, "n_ctx", 1, MAX_CTX, optional=True)
    _whole(n_threads, "n_threads", 1, MAX_THREADS, optional=True)
    _whole(n_gpu_layers, "n_gpu_layers", -1, MAX_GPU_LAYERS, optional=False)
    _whole(n_batch, "n_batch", 1, MAX_CTX, optional=False)


