"""The three decoding modes on an inference server, with the local loops' grammar and scoring.

A server does not hand out its logits, so a remote backend offers three requests instead
(:class:`RemoteModel`); each mode here gives the answer the local loop gives, from the same
prompt ids:

- ``greedy``: the server generates (temperature 0) up to the answer budget; the answer is
  cut where the local loop would stop (the permutation complete). One request per window.
- ``constrained``: the grammar of :mod:`dear_local.contract.constraint` runs here; at each
  choice with more than one admissible token, the server picks the best of them (the
  allowed set enforced with ``logit_bias``), and the text the grammar forces is appended
  to the prompt (jump-forward). One request per choice; the server's prefix cache makes
  each cost the few new tokens. There is no draft: a server evaluates one position per
  request.
- ``first-token``: the top log-probabilities at each point where ids' token paths branch
  (one request for Llama-3's one-token ids), renormalised over the ids as locally.

``Generation.model_calls`` counts requests; ``extra["requests"]`` says the same.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

from ..backends.base import Capabilities
from ..contract import Template
from ..contract.constraint import PermutationConstraint, TokenIndex
from ..errors import ServerError
from .constrained import _Answer, _Forcer
from .first_token import branch_logp, id_token_paths, next_tokens, rank_paths
from .result import Generation, StopCheck


class RemoteModel(ABC):
    """What a server backend offers decoding instead of logits."""

    # no local evaluation state: the decoding modes here; queries may run side by side
    capabilities = Capabilities(local_evaluation=False, concurrent_queries=True)

    @abstractmethod
    def generate(self, ids: list[int], max_tokens: int) -> tuple[list[int], str]:
        """Greedy tokens after ``ids`` (end-of-generation left out) and ``eog`` or ``budget``;
        the prompt is evaluated from the start."""

    @abstractmethod
    def pick(self, ids: list[int], allowed: list[int], fresh: bool = False) -> int:
        """The best of the ``allowed`` tokens after ``ids`` (lowest id on ties).

        ``fresh``: evaluate ``ids`` from the start rather than from a cached prefix (a window's
        first request, so that its logits do not depend on what the server ran before).
        """

    @abstractmethod
    def top(self, ids: list[int], candidates: list[int], fresh: bool = False) -> dict[int, float]:
        """Log-probabilities (up to one shared constant) of each of ``candidates`` after ``ids``."""

    @abstractmethod
    def rebind(self) -> None:
        """A new query starts on this thread: let its requests go to the least-used server."""


def _generation(out, text, reason, requests, t0, t1, t2, extra=None) -> Generation:
    return Generation(token_ids=out, text=text, stop_reason=reason, model_calls=requests,
                      prompt_seconds=t1 - t0, decode_seconds=t2 - t1, extra={"requests": requests, **(extra or {})})


def remote_greedy(backend, prompt_ids: list[int], max_new_tokens: int, stop: StopCheck | None) -> Generation:
    """``greedy`` on a server: one generation request, cut where the local loop stops."""
    t0 = time.perf_counter()
    toks, reason = backend.generate(list(prompt_ids), max_new_tokens)
    t1 = time.perf_counter()
    out: list[int] = []
    for tok in toks[:max_new_tokens]:
        out.append(tok)
        if stop is not None and stop(out):
            reason = "complete"
            break
    else:
        if len(out) >= max_new_tokens:
            reason = "budget"
    return _generation(out, backend.detokenize(out), reason, 1, t0, t1, time.perf_counter())


def remote_constrained(backend, prompt_ids: list[int], n: int, id_base: int = 0) -> Generation:
    """``constrained`` with jump-forward on a server: one ``pick`` request per real choice."""
    constraint = PermutationConstraint(TokenIndex.from_backend(backend), n, id_base)
    ans = _Answer(constraint, _Forcer(backend, constraint), jump_forward=True)
    t0 = time.perf_counter()
    ids = list(prompt_ids) + ans.open()
    requests, t1 = 0, None
    while not ans.done:
        options = constraint.allowed(ans.state)
        if len(options) == 1:
            step = options[0]
        else:
            tok = backend.pick(ids, [o.token for o in options], fresh=requests == 0)
            requests += 1
            step = next((o for o in options if o.token == tok), None)
            if step is None:
                raise ServerError(
                    f"the server chose token {tok}, outside the {len(options)} tokens allowed here; "
                    "it does not apply logit_bias (use --decoding greedy or first-token with this server)"
                )
        t1 = t1 or time.perf_counter()
        ids += ans.take(step, None)
    t2 = time.perf_counter()
    return _generation(ans.out, backend.detokenize(ans.out), "complete", requests, t0, t1 or t2, t2,
                       {"jump_forward": True, "speculate": False, "forced_tokens": ans.n_forced})


def remote_first_token(backend, template: Template, prompt_ids: list[int], n: int) -> tuple[Generation, list[float]]:
    """FIRST on a server: one ``top`` request per branch point of the ids' token paths."""
    prefix_ids, paths = id_token_paths(backend, template, n)
    t0 = time.perf_counter()
    base = list(prompt_ids) + prefix_ids
    logp_at: dict[tuple[int, ...], dict[int, float]] = {}
    requests, t1 = 0, None
    for node, children in next_tokens(paths).items():
        if len(children) == 1:
            logp_at[node] = {children[0]: 0.0}
            continue
        got = backend.top(base + list(node), children, fresh=requests == 0)
        requests += 1
        t1 = t1 or time.perf_counter()
        logp_at[node] = branch_logp(children, [got[c] for c in children])
    t2 = time.perf_counter()
    text, probs = rank_paths(template, paths, logp_at)
    gen = _generation([], text, "complete", requests, t0, t1 or t2, t2, {"extra_steps": requests - 1})
    return gen, probs
