"""``first-token``: FIRST (Reddy et al., 2024), ids ranked from one pass over the prompt.

One pass over the prompt plus the answer's opening ``[``; the ids are ranked by
the probability of their id tokens. When ids share a token prefix (SmolLM2
writes ``12`` as ``1``, ``2``), the shared prefix costs one more decode step,
and each id is scored by the product of its tokens' probabilities, closing
``]`` included.
"""

from __future__ import annotations

import time

import numpy as np

from ..backends.base import Backend
from ..contract import Template
from ..contract.constraint import CLOSE, OPEN, canonical_answer
from ..errors import InvalidModelFileError, UnknownProfileError
from .result import Generation

def id_token_paths(backend: Backend, template: Template, n: int) -> tuple[list[int], list[list[int]]]:
    """The answer prefix's tokens, and for each window position the tokens of ``<id>]`` after it.

    Fails with :class:`UnknownProfileError` when the template's answer prefix
    does not end where an id starts, or when the tokenizer merges the prefix
    or the closing bracket into the id, so the id tokens cannot be found.
    """
    prefix = template.answer_prefix
    fix = "use --decoding constrained or greedy with this template"
    if not prefix or not prefix.endswith(OPEN) or not template.label(0).startswith(OPEN):
        raise UnknownProfileError(
            f"first-token decoding needs the answer to open with the id's '{OPEN}', but template "
            f"{template.name!r} has answer_prefix {prefix!r} and labels like {template.label(0)!r}; {fix}"
        )
    prefix_ids = backend.tokenize(prefix, add_bos=False)
    paths = []
    for k in range(n):
        tail = f"{template.id_base + k}{CLOSE}"
        full = backend.tokenize(prefix + tail, add_bos=False)
        rest = full[len(prefix_ids):]
        if full[: len(prefix_ids)] != prefix_ids or b"".join(map(backend.token_bytes, rest)) != tail.encode():
            raise UnknownProfileError(
                f"first-token decoding cannot find the id token of {prefix + tail!r} in template "
                f"{template.name!r}: this tokenizer merges the answer prefix {prefix!r} with the id; {fix}"
            )
        paths.append(rest)
    for a, pa in enumerate(paths):
        for b, pb in enumerate(paths):
            if a != b and pb[: len(pa)] == pa:
                raise UnknownProfileError(
                    f"first-token decoding cannot tell ids {template.label(a)} and {template.label(b)} apart "
                    f"with this tokenizer; {fix}"
                )
    return prefix_ids, paths


def next_tokens(paths: list[list[int]]) -> dict[tuple[int, ...], list[int]]:
    """For every proper prefix of the id token paths, the distinct tokens that follow it."""
    nodes: dict[tuple[int, ...], list[int]] = {}
    for path in paths:
        for depth in range(len(path)):
            nxt = nodes.setdefault(tuple(path[:depth]), [])
            if path[depth] not in nxt:
                nxt.append(path[depth])
    return nodes


def branch_points(paths: list[list[int]]) -> list[tuple[int, ...]]:
    """The token prefixes after which ids part ways: the prompt pass is ``()``, each other one step."""
    return [node for node, nxt in next_tokens(paths).items() if len(nxt) > 1]


def _log_softmax(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    shifted = values - values.max()
    return shifted - np.log(np.exp(shifted).sum())


def first_token(
    backend: Backend, template: Template, prompt_ids: list[int], n: int, *, prompt_cached: bool = False
) -> tuple[Generation, list[float]]:
    """Rank ``n`` ids from one pass over the prompt and the answer prefix.

    Each id's score is the probability of its token path under the
    constrained answer distribution: at every point where ids' paths branch,
    a softmax over the branching tokens (the root branch is the one pass;
    each deeper branch point is one extra decode step). The scores sum to 1.

    ``prompt_cached`` says the backend's context already starts with
    ``prompt_ids`` (say, right after the same window was ranked by generation):
    the prompt is then not evaluated again, only its last token and the prefix.
    """
    prefix_ids, paths = id_token_paths(backend, template, n)
    branches = next_tokens(paths)

    t0 = time.perf_counter()
    if prompt_cached and backend.n_past >= len(prompt_ids) > 0:
        backend.rewind(len(prompt_ids) - 1)
        logits = backend.extend([prompt_ids[-1], *prefix_ids])
    else:
        logits = backend.prefill(list(prompt_ids) + prefix_ids)
    base = backend.n_past
    t1 = time.perf_counter()
    calls = 1
    logp_at: dict[tuple[int, ...], dict[int, float]] = {}
    for node, children in branches.items():
        if len(children) == 1:
            logp_at[node] = {children[0]: 0.0}
            continue
        if node:
            backend.rewind(base)
            node_logits = backend.extend(list(node))
            calls += 1
        else:
            node_logits = logits
        logp_at[node] = branch_logp(children, node_logits[np.asarray(children, dtype=np.int64)])
    if calls > 1:
        backend.rewind(base)
    t2 = time.perf_counter()

    text, probs = rank_paths(template, paths, logp_at)
    gen = Generation(
        token_ids=[],
        text=text,
        stop_reason="complete",
        model_calls=calls,
        prompt_seconds=t1 - t0,
        decode_seconds=t2 - t1,
        extra={"extra_steps": calls - 1},
    )
    return gen, probs


def branch_logp(children: list[int], values: np.ndarray) -> dict[int, float]:
    """Log-probabilities of the ``children`` tokens renormalised among themselves.

    ``values`` are their logits, or log-probabilities over any larger set (a constant
    shift does not change the result); ``-inf`` is a probability of 0. When every child
    has probability 0 (a server's log-probabilities can underflow to ``-inf``), the
    children tie: each gets ``1/len(children)``. So at least one child always gets a finite
    log-probability, and every score ``rank_paths`` makes from these is a number.

    Raises:
        InvalidModelFileError: a value is NaN or +inf: the model's logits are broken.
    """
    values = np.asarray(values, dtype=np.float64)
    if np.isnan(values).any() or np.isposinf(values).any():
        raise InvalidModelFileError(
            "the model's scores for the id tokens are not numbers (NaN or infinity): its weights or their "
            "quantization are broken; try another quant of the model, or the BF16 file"
        )
    if np.isneginf(values).all():
        values = np.zeros_like(values)
    return dict(zip(children, _log_softmax(values).tolist()))


def rank_paths(template: Template, paths: list[list[int]], logp_at: dict) -> tuple[str, list[float]]:
    """The canonical answer and per-position probabilities from each branch point's log-probabilities.

    An id's log-probability is the sum along its token path; ties go to the lower id. With
    ``logp_at`` from :func:`branch_logp` (each branch's best child finite) the probabilities
    are numbers in [0, 1] that sum to 1.
    """
    n = len(paths)
    logp = np.array([sum(logp_at[tuple(p[:d])][p[d]] for d in range(len(p))) for p in paths])
    probs = np.exp(logp - logp.max())
    probs /= probs.sum()
    order = sorted(range(n), key=lambda k: (-logp[k], k))
    return canonical_answer([template.id_base + k for k in order]), [float(p) for p in probs]
