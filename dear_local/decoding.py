"""Decoding modes beyond plain greedy: ``constrained`` (with jump-forward) and ``first-token``.

Both are written against the :class:`~dear_local.backends.base.Backend`
protocol only (``prefill``, ``extend``, ``rewind``, ``tokenize``,
``token_bytes``), so llama.cpp and the transformers reference decode the same way.

``constrained``
    Greedy decoding in which only tokens that keep the answer a prefix of a
    valid permutation ``[a] > [b] > ... > [z]`` may be chosen (see
    :mod:`dear_local.contract.constraint`). It ends exactly when every id has
    been named once, so a malformed ranking cannot come out. With
    *jump-forward*, text the grammar forces (``] > [`` between ids, the last
    id) is tokenized and appended without a model choice, and evaluated in one
    batch together with the next step: one model call per chosen token. Each
    call can also carry a *draft* of the next ids (ordered by their first-token
    score, or continuing a run of neighbouring ids); the logits at every drafted
    choice come back from the same batch, each choice is checked against the
    model's own, and the draft is cut at the first disagreement, so the answer
    stays the greedy one while the calls drop further.

``first-token``
    FIRST (Reddy et al., 2024): one pass over the prompt plus the answer's
    opening ``[``; the ids are ranked by the probability of their id tokens.
    When ids share a token prefix (SmolLM2 writes ``12`` as ``1``, ``2``), the
    shared prefix costs one more decode step, and each id is scored by the
    product of its tokens' probabilities, closing ``]`` included.
"""

from __future__ import annotations

import time

import numpy as np

from .backends.base import Backend, Generation
from .contract import Profile, Template
from .contract.constraint import (
    CLOSE,
    OPEN,
    PermutationConstraint,
    State,
    TokenIndex,
    canonical_answer,
)
from .errors import UnknownProfileError


def decode(backend: Backend, profile: Profile, prompt_ids: list[int], n: int) -> tuple[Generation, list[float] | None]:
    """Decode one window of ``n`` ids with the profile's (non-greedy) mode.

    Returns the generation and, for ``first-token``, a relevance score per
    window position (a softmax over the ids, summing to 1).
    """
    tmpl = profile.tmpl
    if profile.decoding == "constrained":
        return constrained(backend, prompt_ids, n, tmpl.id_base), None
    if profile.decoding == "first-token":
        return first_token(backend, tmpl, prompt_ids, n)
    raise UnknownProfileError(
        f"decoding mode {profile.decoding!r} is not handled here; use 'constrained' or 'first-token'"
    )


# -- constrained decoding -----------------------------------------------------------


class _Forcer:
    """Turns the text a grammar state forces into tokens, caching tokenizations."""

    def __init__(self, backend: Backend, constraint: PermutationConstraint) -> None:
        self.backend = backend
        self.constraint = constraint
        self._cache: dict[str, list[int]] = {}

    def __call__(self, state: State) -> tuple[list[int], State]:
        text = self.constraint.forced_text(state)
        if not text:
            return [], state
        toks = self._cache.get(text)
        if toks is None:
            toks = self._cache[text] = self.backend.tokenize(text, add_bos=False)
        out = state
        for t in toks:
            nxt = self.constraint.advance(out, t)
            if nxt is None:  # a tokenizer that cannot spell the forced text alone
                return [], state
            out = nxt
        return list(toks), out


def _pick(constraint: PermutationConstraint, state: State, logits: np.ndarray):
    """The best admissible step from ``state`` (lowest token id on ties) and its margin.

    The margin is the gap to the runner-up as a fraction of the logit range, or
    None when only one token is admissible.
    """
    options = constraint.allowed(state)
    if not options:  # pragma: no cover - the grammar has no dead ends (property-tested)
        raise AssertionError("no admissible token")
    if len(options) == 1:
        return options[0], None
    toks = np.fromiter((o.token for o in options), dtype=np.int64, count=len(options))
    vals = logits[toks]
    order = np.lexsort((toks, -vals))  # best logit first, lowest token id on ties
    span = float(logits.max() - logits.min()) or 1.0
    return options[int(order[0])], float(vals[order[0]] - vals[order[1]]) / span


def _first_choice(constraint: PermutationConstraint, options: list, state: State, k: int):
    """Among ``options`` (admissible from ``state``), the longest piece that goes on spelling id ``k``."""
    rest = (constraint.labels[k] + CLOSE).encode()[len(state.digits):]
    pieces = constraint.index.pieces
    best = None
    for step in options:
        piece = pieces[step.token]
        if rest.startswith(piece) and (best is None or len(piece) > len(pieces[best.token])):
            best = step
    return best


def _spell(constraint: PermutationConstraint, force: _Forcer, state: State, k: int):
    """The tokens naming id ``k`` from ``state`` as the decoding loop would append them.

    Returns (tokens, chosen flags, state after) or None when ``k`` cannot be spelled here.
    Choices take the longest admissible piece; forced text follows as jump-forward adds it.
    """
    toks: list[int] = []
    chosen: list[bool] = []
    while not state.used & (1 << k):
        step = _first_choice(constraint, constraint.allowed(state), state, k)
        if step is None:
            return None
        forced, state = force(step.state)
        toks += [step.token, *forced]
        chosen += [True] + [False] * len(forced)
    return toks, chosen, state


def _draft(constraint, force, state: State, order: list[int], n_ids: int) -> tuple[list[int], list[bool]]:
    """Spell the next ``n_ids`` unused ids of ``order`` from ``state``: tokens, and which are choices."""
    toks: list[int] = []
    chosen: list[bool] = []
    for k in order:
        if n_ids <= 0 or constraint.is_done(state):
            break
        if state.used & (1 << k):
            continue
        spelled = _spell(constraint, force, state, k)
        if spelled is None:
            break
        toks += spelled[0]
        chosen += spelled[1]
        state = spelled[2]
        n_ids -= 1
    return toks, chosen


def _draft_order(constraint: PermutationConstraint, state: State, logits: np.ndarray, named: list[int]) -> list[int]:
    """The unused ids in the order the draft proposes them.

    By default, by the logit of the token that starts each id here (FIRST's
    score, ties by id). When the last two ids named were neighbours, the run
    is continued first: rankers, small ones especially, often write runs such
    as ``[9] > [8] > [7]``.
    """
    options = constraint.allowed(state)
    scored = []
    for k in range(constraint.n):
        if state.used & (1 << k):
            continue
        step = _first_choice(constraint, options, state, k)
        if step is not None:
            scored.append((-float(logits[step.token]), k))
    order = [k for _, k in sorted(scored)]
    if len(named) >= 2 and abs(named[-1] - named[-2]) == 1:
        step_by = named[-1] - named[-2]
        run = []
        k = named[-1] + step_by
        while 0 <= k < constraint.n and not state.used & (1 << k):
            run.append(k)
            k += step_by
        order = run + [k for k in order if k not in run]
    return order


def _newly_named(before: State, after: State) -> list[int]:
    new = after.used & ~before.used
    return [k for k in range(new.bit_length()) if new >> k & 1]


def constrained(
    backend: Backend,
    prompt_ids: list[int],
    n: int,
    id_base: int = 0,
    *,
    jump_forward: bool = True,
    speculate: bool = True,
) -> Generation:
    """Greedy decoding restricted to valid permutations of ``n`` ids.

    With ``speculate`` (and jump-forward), each model call also carries a draft
    of the next ids: the remaining ids in order of their first-token score, read
    off the logits the decoding already has. Every drafted choice is checked
    against the model's own constrained argmax at that position (the batch's
    logits hold every position); the first disagreement is replaced by the
    model's choice and the rest of the draft is dropped from the cache. The
    output is the greedy one either way; only the number of calls changes. The
    draft doubles while it is right and drops to one id when it is not; a wrong
    first guess also pauses drafting for a number of calls that doubles with
    each such miss in a row.

    ``extra`` reports ``jump_forward``, ``forced_tokens`` (appended without a
    model choice), ``drafted``/``accepted`` tokens and ``margins``: per output
    token, the gap between the best and second-best allowed logit as a fraction
    of the logit range (None where the token was forced or the only one
    allowed), for spotting near-ties.
    """
    constraint = PermutationConstraint(TokenIndex.from_backend(backend), n, id_base)
    force = _Forcer(backend, constraint)
    speculate = speculate and jump_forward and n > 2
    t0 = time.perf_counter()
    state = constraint.initial
    out: list[int] = []
    margins: list[float | None] = []
    pending: list[int] = []
    if jump_forward:
        pending, state = force(state)
        out += pending
        margins += [None] * len(pending)
    logits = backend.prefill(list(prompt_ids) + pending)
    calls, n_forced, drafted, accepted = 1, len(pending), 0, 0
    t1 = time.perf_counter()
    # The draft policy: ``ahead`` ids per call, doubled while the draft is right. A
    # draft whose first choice is wrong pauses drafting for ``wait`` calls, a pause
    # that doubles on each such miss in a row, so an unpredictable model costs
    # little more than plain jump-forward.
    ahead, wait, backoff = 1, 0, 1
    start_logits = logits  # the last logits read where an id starts: they order the draft
    named: list[int] = []  # ids in the order the answer names them
    while not constraint.is_done(state):
        if not state.digits:
            start_logits = logits
        best, margin = _pick(constraint, state, logits)
        before = state
        state = best.state
        out.append(best.token)
        margins.append(margin)
        pending = [best.token]
        if jump_forward:
            forced, state = force(state)
            pending += forced
            out += forced
            margins += [None] * len(forced)
            n_forced += len(forced)
        if constraint.is_done(state):
            break
        named += _newly_named(before, state)
        calls += 1
        if not speculate:
            logits = backend.extend(pending)
            continue
        if wait:
            wait -= 1
            logits = backend.extend(pending)
            continue
        base = backend.n_past
        order = _draft_order(constraint, state, start_logits, named)
        toks, chosen = _draft(constraint, force, state, order, ahead)
        # Logits are read only where a choice is made: before each drafted choice, and at the end.
        batch = pending + toks
        at = [len(pending) + j - 1 for j, c in enumerate(chosen) if c] + [len(batch) - 1]
        if at[0] != len(pending) - 1:
            at.insert(0, len(pending) - 1)
        got = backend.extend_rows(batch, at)
        rows = {i: got[r] for r, i in enumerate(at)}
        drafted += len(toks)
        logits = rows[len(pending) - 1]
        for j, (tok, is_choice) in enumerate(zip(toks, chosen)):
            margin = None
            if is_choice:
                if not state.digits:
                    start_logits = logits
                pick, margin = _pick(constraint, state, logits)
                if pick.token != tok:  # the model disagrees: keep what it has confirmed
                    backend.rewind(base + len(pending) + j)
                    if j == 0:
                        wait, backoff = backoff, backoff * 2
                    ahead = 1
                    break
            before, state = state, constraint.advance(state, tok)
            named += _newly_named(before, state)
            out.append(tok)
            margins.append(margin)
            accepted += 1
            n_forced += not is_choice
            logits = rows.get(len(pending) + j)
        else:
            ahead, backoff = ahead * 2, 1
    t2 = time.perf_counter()
    return Generation(
        token_ids=out,
        text=backend.detokenize(out),
        stop_reason="complete",
        model_calls=calls,
        prompt_seconds=t1 - t0,
        decode_seconds=t2 - t1,
        extra={"jump_forward": jump_forward, "speculate": speculate, "forced_tokens": n_forced,
               "drafted": drafted, "accepted": accepted, "margins": margins},
    )


# -- first-token ranking ---------------------------------------------------------------


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


def _next_tokens(paths: list[list[int]]) -> dict[tuple[int, ...], list[int]]:
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
    return [node for node, nxt in _next_tokens(paths).items() if len(nxt) > 1]


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
    branches = _next_tokens(paths)

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
        lp = _log_softmax(node_logits[np.asarray(children, dtype=np.int64)])
        logp_at[node] = dict(zip(children, lp.tolist()))
    if calls > 1:
        backend.rewind(base)
    t2 = time.perf_counter()

    logp = np.array([sum(logp_at[tuple(p[:d])][p[d]] for d in range(len(p))) for p in paths])
    probs = np.exp(logp - logp.max())
    probs /= probs.sum()
    order = sorted(range(n), key=lambda k: (-logp[k], k))
    text = canonical_answer([template.id_base + k for k in order])
    gen = Generation(
        token_ids=[],
        text=text,
        stop_reason="complete",
        model_calls=calls,
        prompt_seconds=t1 - t0,
        decode_seconds=t2 - t1,
        extra={"extra_steps": calls - 1},
    )
    return gen, [float(p) for p in probs]
