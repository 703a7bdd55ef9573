"""``constrained``: greedy decoding that can only write a valid permutation, with jump-forward and a draft.

Greedy decoding in which only tokens that keep the answer a prefix of a valid
permutation ``[a] > [b] > ... > [z]`` may be chosen (see
:mod:`dear_local.contract.constraint`). It ends exactly when every id has been
named once, so a malformed ranking cannot come out. With *jump-forward*, text
the grammar forces (``] > [`` between ids, the last id) is tokenized and
appended without a model choice, and evaluated in one batch together with the
next step: one model call per chosen token. Each call can also carry a *draft*
of the next ids (ordered by their first-token score, or continuing a run of
neighbouring ids); the logits at every drafted choice come back from the same
batch, each choice is checked against the model's own, and the draft is cut at
the first disagreement, so the answer stays the greedy one while the calls drop
further.

Written against the :class:`~dear_local.backends.base.Backend` primitives only
(``prefill``, ``extend``, ``extend_rows``, ``rewind``, ``tokenize``,
``token_bytes``), so llama.cpp and the transformers reference decode the same way.
"""

from __future__ import annotations

import time

import numpy as np

from ..backends.base import Backend
from ..contract.constraint import CLOSE, PermutationConstraint, State, TokenIndex
from .result import Generation


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


class _Answer:
    """The answer being built: its tokens, per-token margins, grammar state, the ids named so far, and counts."""

    def __init__(self, constraint: PermutationConstraint, force: _Forcer, jump_forward: bool) -> None:
        self.constraint, self.force, self.jump_forward = constraint, force, jump_forward
        self.state = constraint.initial
        self.out: list[int] = []
        self.margins: list[float | None] = []
        self.named: list[int] = []  # ids in the order the answer names them
        self.n_forced = self.drafted = self.accepted = 0

    @property
    def done(self) -> bool:
        return self.constraint.is_done(self.state)

    def _forced(self) -> list[int]:
        if not self.jump_forward:
            return []
        forced, self.state = self.force(self.state)
        self.out += forced
        self.margins += [None] * len(forced)
        self.n_forced += len(forced)
        return forced

    def open(self) -> list[int]:
        """The text forced before any choice (with jump-forward): tokens to append to the prompt."""
        return self._forced()

    def choose(self, logits: np.ndarray) -> list[int]:
        """Take the model's best admissible token, then the text it forces; returns the tokens to feed."""
        return self.take(*_pick(self.constraint, self.state, logits))

    def take(self, best, margin: float | None) -> list[int]:
        """Take the admissible step ``best``, then the text it forces; returns the tokens to feed."""
        before, self.state = self.state, best.state
        self.out.append(best.token)
        self.margins.append(margin)
        pending = [best.token, *self._forced()]
        self.named += _newly_named(before, self.state)
        return pending

    def accept(self, tok: int, margin: float | None, is_choice: bool) -> None:
        """Append one drafted token the model confirmed (or that the grammar forces)."""
        before, self.state = self.state, self.constraint.advance(self.state, tok)
        self.named += _newly_named(before, self.state)
        self.out.append(tok)
        self.margins.append(margin)
        self.accepted += 1
        self.n_forced += not is_choice


class _Draft:
    """The draft policy: ``ahead`` ids per call, doubled while the draft is right.

    A draft whose first choice is wrong pauses drafting for ``wait`` calls, a
    pause that doubles on each such miss in a row, so an unpredictable model
    costs little more than plain jump-forward.
    """

    def __init__(self) -> None:
        self.ahead, self.wait, self.backoff = 1, 0, 1

    def pausing(self) -> bool:
        if self.wait:
            self.wait -= 1
            return True
        return False

    def extend(self, backend: Backend, ans: _Answer, pending: list[int], start_logits: np.ndarray):
        """Feed ``pending`` and a draft of the next ids in one batch; keep what the model confirms.

        Returns the logits after the last kept token and the logits where the last id started.
        """
        c = ans.constraint
        base = backend.n_past
        toks, chosen = _draft(c, ans.force, ans.state, _draft_order(c, ans.state, start_logits, ans.named), self.ahead)
        # Logits are read only where a choice is made: before each drafted choice, and at the end.
        batch = pending + toks
        at = [len(pending) + j - 1 for j, ch in enumerate(chosen) if ch] + [len(batch) - 1]
        if at[0] != len(pending) - 1:
            at.insert(0, len(pending) - 1)
        rows = dict(zip(at, backend.extend_rows(batch, at)))
        ans.drafted += len(toks)
        logits = rows[len(pending) - 1]
        for j, (tok, is_choice) in enumerate(zip(toks, chosen)):
            margin = None
            if is_choice:
                if not ans.state.digits:
                    start_logits = logits
                pick, margin = _pick(c, ans.state, logits)
                if pick.token != tok:  # the model disagrees: keep what it has confirmed
                    backend.rewind(base + len(pending) + j)
                    if j == 0:
                        self.wait, self.backoff = self.backoff, self.backoff * 2
                    self.ahead = 1
                    return logits, start_logits
            ans.accept(tok, margin, is_choice)
            logits = rows.get(len(pending) + j)
        self.ahead, self.backoff = self.ahead * 2, 1
        return logits, start_logits


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
    output is the greedy one either way; only the number of calls changes (see
    :class:`_Draft` for the policy).

    ``extra`` reports ``jump_forward``, ``forced_tokens`` (appended without a
    model choice), ``drafted``/``accepted`` tokens and ``margins``: per output
    token, the gap between the best and second-best allowed logit as a fraction
    of the logit range (None where the token was forced or the only one
    allowed), for spotting near-ties.
    """
    constraint = PermutationConstraint(TokenIndex.from_backend(backend), n, id_base)
    ans = _Answer(constraint, _Forcer(backend, constraint), jump_forward)
    draft = _Draft() if speculate and jump_forward and n > 2 else None
    t0 = time.perf_counter()
    logits = backend.prefill(list(prompt_ids) + ans.open())
    calls = 1
    t1 = time.perf_counter()
    start_logits = logits  # the last logits read where an id starts: they order the draft
    while not ans.done:
        if not ans.state.digits:
            start_logits = logits
        pending = ans.choose(logits)
        if ans.done:
            break
        calls += 1
        if draft is None or draft.pausing():
            logits = backend.extend(pending)
        else:
            logits, start_logits = draft.extend(backend, ans, pending, start_logits)
    t2 = time.perf_counter()
    return Generation(
        token_ids=ans.out,
        text=backend.detokenize(ans.out),
        stop_reason="complete",
        model_calls=calls,
        prompt_seconds=t1 - t0,
        decode_seconds=t2 - t1,
        extra={"jump_forward": jump_forward, "speculate": draft is not None, "forced_tokens": ans.n_forced,
               "drafted": ans.drafted, "accepted": ans.accepted, "margins": ans.margins},
    )
