"""``greedy``: argmax at every step, stopped at end-of-generation or once the answer is a full permutation.

Written against the :class:`~dear_local.backends.base.Backend` primitives only,
so llama.cpp and the transformers reference decode with the very same loop.
"""

from __future__ import annotations

import time

import numpy as np

from ..backends.base import Backend
from ..contract import is_complete
from ..contract.constraint import CLOSE
from .result import Generation, StopCheck



def greedy(backend: Backend, prompt_ids: list[int], max_new_tokens: int, stop: StopCheck | None = None) -> Generation:
    """Greedy decoding: argmax each step, stop at end-of-generation, ``stop`` or after ``max_new_tokens``."""
    t0 = time.perf_counter()
    logits = backend.prefill(prompt_ids)
    t1 = time.perf_counter()
    out: list[int] = []
    calls, reason = 1, "budget"
    eog = backend.eog_ids
    while len(out) < max_new_tokens:
        tok = int(np.argmax(logits))
        if tok in eog:
            reason = "eog"
            break
        out.append(tok)
        if stop is not None and stop(out):
            reason = "complete"
            break
        if len(out) >= max_new_tokens:
            break
        logits = backend.extend([tok])
        calls += 1
    t2 = time.perf_counter()
    return Generation(
        token_ids=out,
        text=backend.detokenize(out),
        stop_reason=reason,
        model_calls=calls,
        prompt_seconds=t1 - t0,
        decode_seconds=t2 - t1,
    )


def completion_check(backend: Backend, n: int, id_base: int) -> StopCheck:
    """A stop check that is true once the output names all ``n`` ids as a permutation."""

    def done(out: list[int]) -> bool:
        # Only a closing bracket can complete a permutation; skip the decode otherwise.
        if CLOSE not in backend.detokenize(out[-1:]):
            return False
        return is_complete(backend.detokenize(out), n, id_base)

    return done
