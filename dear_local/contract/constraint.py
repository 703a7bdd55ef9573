"""The permutation constraint: which tokens keep an answer a prefix of ``[a] > [b] > ... > [z]``.

The canonical answer for a window of ``n`` ids (in the template's base, 0 or 1)
names every id exactly once, in decimal, in the form ``[a] > [b] > ... > [z]``
and nothing else. :class:`PermutationConstraint` is a state machine over the
*characters* of that string; it is lifted to *tokens* by walking each token's
bytes. So it does not care how a tokenizer cuts the digits: SmolLM2 writes
``12`` as ``1``, ``2`` and Llama-3 as one token ``12``; both are accepted, and
so is any other tokenization whose bytes spell a valid prefix.

:class:`TokenIndex` is built once per vocabulary. It keeps only the tokens made
of the answer's characters (``[``, ``]``, ``>``, space and digits) in a byte
trie, so finding the allowed tokens walks the few trie branches the grammar
admits instead of scanning the vocabulary.

Both backends use this module: the llama.cpp runtime (``dear_local.decoding``)
and transformers ``generate`` (``dear_local_convert.transformers_backend.logits_processor``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple, Sequence

OPEN, CLOSE = "[", "]"
SEPARATOR = " > "
ALPHABET = frozenset(b"[]> 0123456789")
_DIGITS = frozenset(b"0123456789")
_OPEN_B, _CLOSE_B = ord(OPEN), ord(CLOSE)
# Between two ids the answer always reads "] > [": the close bracket is chosen
# (it ends an id), the rest is fixed. ``LITERAL`` is that fixed part; the
# answer's very first character is its last one, "[".
_LITERAL = (SEPARATOR + OPEN).encode()
_IN_ID = len(_LITERAL)  # phase value: inside the brackets, reading digits
_DONE = _IN_ID + 1  # phase value: the permutation is complete


def canonical_answer(ids: Sequence[int]) -> str:
    """The canonical answer text naming ``ids`` (already in the template's base) in order."""
    return SEPARATOR.join(f"{OPEN}{i}{CLOSE}" for i in ids)


def is_canonical_answer(text: str, n: int, id_base: int = 0) -> bool:
    """True when ``text`` is exactly ``[a] > ... > [z]`` naming each of the ``n`` ids once."""
    if not re.fullmatch(r"\[(0|[1-9]\d*)\](?: > \[(0|[1-9]\d*)\])*", text):
        return False
    ids = [int(m) for m in re.findall(r"\d+", text)]
    return sorted(ids) == list(range(id_base, id_base + n))


class State(NamedTuple):
    """Where an answer stands: ids used (a bitmask), phase and the digits read so far.

    ``phase`` < 4 means "inside the fixed text ' > [' at this offset", 4 means
    "inside the brackets", 5 means "complete".
    """

    used: int
    phase: int
    digits: str


class TokenIndex:
    """The vocabulary's tokens that can occur in an answer, in a byte trie.

    Built from every token's bytes (``pieces[token_id]``); tokens with any other
    character, and empty tokens, can never be part of an answer and are left out.
    """

    def __init__(self, pieces: Sequence[bytes]) -> None:
        self.n_vocab = len(pieces)
        # A trie node is (children: {byte: node}, tokens ending here: [id]).
        self.root: tuple[dict, list[int]] = ({}, [])
        self.pieces: dict[int, bytes] = {}
        for tok, piece in enumerate(pieces):
            if piece and ALPHABET.issuperset(piece):
                self.pieces[tok] = bytes(piece)
                node = self.root
                for b in piece:
                    node = node[0].setdefault(b, ({}, []))
                node[1].append(tok)

    def __len__(self) -> int:
        return len(self.pieces)

    @classmethod
    def from_backend(cls, backend) -> "TokenIndex":
        """The index for a backend's vocabulary, built once and kept on the backend."""
        return backend.memo("_permutation_token_index", lambda: cls(backend.vocab_pieces()))


@dataclass(frozen=True)
class Step:
    token: int
    state: State


class PermutationConstraint:
    """The answer grammar for one window: ``n`` ids starting at ``id_base``.

    States are immutable; :meth:`allowed` lists the tokens admissible from a
    state with the state each leads to, :meth:`advance` follows one token, and
    :meth:`forced_text` says which text is the only possible continuation.
    """

    def __init__(self, index: TokenIndex, n: int, id_base: int = 0) -> None:
        if n < 1:
            raise ValueError(f"a permutation needs at least one id, got n={n}")
        self.index = index
        self.n = n
        self.id_base = id_base
        self.labels = [str(id_base + k) for k in range(n)]
        self.full = (1 << n) - 1
        self._bit = {s: 1 << k for k, s in enumerate(self.labels)}
        # For every digit prefix of a label: the ids that start with it.
        self._prefix: dict[str, int] = {}
        for k, s in enumerate(self.labels):
            for j in range(1, len(s) + 1):
                self._prefix[s[:j]] = self._prefix.get(s[:j], 0) | (1 << k)

    # -- the character machine ------------------------------------------------
    @property
    def initial(self) -> State:
        return State(0, _IN_ID - 1, "")  # expecting the opening "["

    @staticmethod
    def is_done(state: State) -> bool:
        return state.phase == _DONE

    def step_byte(self, state: State, b: int) -> State | None:
        """The state after one more character, or None if it breaks the grammar."""
        used, phase, digits = state
        if phase < _IN_ID:
            if b != _LITERAL[phase]:
                return None
            return State(used, phase + 1, "")
        if phase == _IN_ID:
            if b in _DIGITS:
                text = digits + chr(b)
                if self._prefix.get(text, 0) & ~used:
                    return State(used, _IN_ID, text)
                return None
            if b == _CLOSE_B:
                bit = self._bit.get(digits, 0)
                if bit and not used & bit:
                    used |= bit
                    return State(used, _DONE if used == self.full else 0, "")
            return None
        return None

    def step_text(self, state: State | None, text: bytes | str) -> State | None:
        if isinstance(text, str):
            text = text.encode()
        for b in text:
            if state is None:
                return None
            state = self.step_byte(state, b)
        return state

    # -- tokens ----------------------------------------------------------------
    def advance(self, state: State, token: int) -> State | None:
        """The state after ``token``, or None when the token is not admissible."""
        piece = self.index.pieces.get(token)
        if piece is None:
            return None
        return self.step_text(state, piece)

    def allowed(self, state: State) -> list[Step]:
        """Every admissible token from ``state``, each with the state it leads to."""
        out: list[Step] = []
        if state.phase != _DONE:
            self._walk(self.index.root, state, out)
        return out

    def _walk(self, node, state: State, out: list[Step]) -> None:
        for b, child in node[0].items():
            nxt = self.step_byte(state, b)
            if nxt is None:
                continue
            for tok in child[1]:
                out.append(Step(tok, nxt))
            if child[0] and nxt.phase != _DONE:
                self._walk(child, nxt, out)

    # -- jump-forward ------------------------------------------------------------
    def forced_text(self, state: State) -> str:
        """The text every valid continuation from ``state`` starts with (may be empty).

        Fixed punctuation is always forced; digits are forced only once they
        name a single remaining id (then its closing bracket is forced too).
        A partly shared digit prefix is not forced, because a tokenizer that
        merges digits would write it differently from the model's own choice.
        """
        out: list[str] = []
        used, phase, digits = state
        while phase != _DONE:
            if phase < _IN_ID:
                out.append(_LITERAL[phase:].decode())
                phase, digits = _IN_ID, ""
                continue
            free = [s for s in self.labels if s.startswith(digits) and not used & self._bit[s]]
            if len(free) != 1:
                break
            out.append(free[0][len(digits):] + CLOSE)
            used |= self._bit[free[0]]
            phase, digits = (_DONE if used == self.full else 0), ""
        return "".join(out)
