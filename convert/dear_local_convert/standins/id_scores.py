"""First-token id scores as a differentiable torch function: what ``--decoding first-token`` ranks by.

``dear_local.decoding.first_token`` ranks a window's ids from one pass over the prompt and
the answer's opening ``[``: each id's log-probability is the sum, along its token path
(``12]`` is ``1``, ``2``, ``]`` for SmolLM2), of log-softmaxes over the tokens that branch at
each point. This module computes the same numbers on a transformers model with gradients,
so training can optimise the very scores the runtime ranks by (FIRST, Reddy et al. 2024),
and a training run can measure its dev nDCG@10 without decoding.

Shapes: :func:`id_logprobs` returns a float tensor of shape ``(n,)``, one log-probability per
window position (the id ``template.id_base + k`` at index ``k``); ``exp`` of it sums to 1.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IdTree:
    """The token paths of a window's ids after the answer prefix, and where they branch.

    ``prefix_ids``: the answer prefix's tokens (``[``); ``paths[k]``: the tokens of
    ``<id_base + k>]``; ``branches``: every proper prefix of a path (a tuple of tokens, ``()``
    is the point right after the prefix) with the distinct tokens that follow it.
    """

    prefix_ids: tuple[int, ...]
    paths: tuple[tuple[int, ...], ...]
    branches: dict[tuple[int, ...], tuple[int, ...]]

    @classmethod
    def build(cls, backend, template, n: int) -> "IdTree":
        """The tree for ``n`` ids under ``template`` with ``backend``'s tokenizer.

        Raises:
            UnknownProfileError: the tokenizer merges the prefix with the ids, or cannot tell
                two ids apart (as ``--decoding first-token`` does).
        """
        from dear_local.decoding.first_token import id_token_paths, next_tokens

        prefix, paths = id_token_paths(backend, template, n)
        branches = {node: tuple(children) for node, children in next_tokens(paths).items()}
        return cls(tuple(prefix), tuple(tuple(p) for p in paths), branches)


def id_logprobs(model, tree: IdTree, root_logits, cache, base_len: int):
    """Log-probabilities of the window's ids, shape ``(n,)``, differentiable.

    ``root_logits`` (shape ``(vocab,)``) are the model's logits right after the prompt and the
    answer prefix; ``cache`` is the model's ``DynamicCache`` holding at least those ``base_len``
    positions (a longer cache, say with the answer after them, is cropped back). Each deeper
    branch point costs one forward of its few tokens on the cropped cache.
    """
    import torch

    from dear_local_convert.transformers_backend.backend import cache_kwarg

    logp_at: dict[tuple[int, ...], dict[int, torch.Tensor]] = {}
    zero = root_logits.new_zeros(())
    for node, children in tree.branches.items():
        if len(children) == 1:
            logp_at[node] = {children[0]: zero}
            continue
        if node:
            _crop_to(cache, base_len)
            out = model(input_ids=torch.tensor([list(node)]), use_cache=True, **{cache_kwarg(model): cache})
            logits = out.logits[0, -1]
        else:
            logits = root_logits
        values = torch.log_softmax(logits[list(children)].float(), dim=-1)
        logp_at[node] = {tok: values[i] for i, tok in enumerate(children)}
    _crop_to(cache, base_len)
    return torch.stack([sum((logp_at[path[:d]][path[d]] for d in range(len(path))), zero) for path in tree.paths])


def _crop_to(cache, length: int) -> None:
    """Drop the cache's positions after the first ``length`` (transformers' ``crop`` takes how many to remove)."""
    drop = cache.get_seq_length() - length
    if drop > 0:
        cache.crop(-drop)


def order_by(logp) -> list[int]:
    """Window positions best first, from :func:`id_logprobs`'s scores; ties go to the lower id, as the runtime does."""
    values = [float(v) for v in logp]
    return sorted(range(len(values)), key=lambda k: (-values[k], k))
