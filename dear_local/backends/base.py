"""The backend protocol: what the ranking engine needs from a model runtime.

A backend holds one model and one evaluation state. The engine drives it with
``prefill`` (start from a prompt), ``extend`` (feed more tokens) and
``rewind`` (forget tokens past a position), and reads the logits at the last
position. Greedy decoding is written once, here, so llama.cpp and the
transformers reference decode with the very same loop.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..chat_template import render_chat

# Decides, from the token ids generated so far, whether generation is done.
StopCheck = Callable[[list[int]], bool]


@dataclass
class Generation:
    token_ids: list[int]
    text: str
    stop_reason: str  # "eog", "complete", "budget"
    model_calls: int  # sequential forward passes, prompt pass included
    prompt_seconds: float
    decode_seconds: float
    extra: dict = field(default_factory=dict)


class Backend(ABC):
    """Base class for a model runtime (llama.cpp here, transformers in ``convert``)."""

    name: str = "backend"
    n_ctx: int
    n_vocab: int
    add_bos: bool
    bos_token: str
    eos_token: str
    eog_ids: frozenset[int]
    chat_template: str | None
    model_label: str = ""

    # -- tokens -------------------------------------------------------------
    @abstractmethod
    def tokenize(self, text: str, *, add_bos: bool, special: bool = False) -> list[int]:
        """Token ids for ``text``, with the BOS id first when ``add_bos``.

        With ``special=False`` (the default) special-token text such as
        ``<|eot_id|>`` is tokenized as ordinary text; with ``special=True`` it
        becomes the special token. Prompts are built by ``dear_local.prompt``,
        which turns only the template's own markers into special tokens.
        """

    @abstractmethod
    def special_token_ids(self) -> dict[str, int]:
        """Text -> id of every token that ``special=True`` parsing produces from its text.

        These are the control tokens (``<|eot_id|>``, ``<|im_start|>``, ...);
        in a prompt they split the text, which is what lets the prompt builder
        tokenize the text between them on its own.
        """

    @abstractmethod
    def detokenize(self, ids: list[int]) -> str:
        """Text for ``ids`` (special tokens rendered as their text)."""

    def token_bytes(self, tok: int) -> bytes:
        """The raw bytes one token stands for (special tokens as their text).

        Constrained and first-token decoding need it; a backend that supports
        them overrides this.
        """
        raise NotImplementedError(f"the {self.name} backend does not expose token bytes")

    def vocab_pieces(self) -> list[bytes]:
        """``token_bytes`` of every token id, computed once per backend and kept."""
        pieces = self.__dict__.get("_vocab_pieces")
        if pieces is None:
            pieces = self._vocab_pieces = [self.token_bytes(t) for t in range(self.n_vocab)]
        return pieces

    @abstractmethod
    def token_text(self, tok: int) -> str:
        """The vocabulary entry of one token as the tokenizer stores it (e.g. ``Ġthe``)."""

    def render_chat(self, messages: list[dict]) -> str:
        return render_chat(
            self.chat_template, messages, bos_token=self.bos_token, eos_token=self.eos_token
        )

    # -- evaluation state ---------------------------------------------------
    @abstractmethod
    def prefill(self, ids: list[int]) -> np.ndarray:
        """Start a new sequence from ``ids``; return the logits after the last one."""

    @abstractmethod
    def extend(self, ids: list[int]) -> np.ndarray:
        """Append ``ids`` (one batch, one model call); return the logits after the last one."""

    def extend_rows(self, ids: list[int], rows: list[int]) -> np.ndarray:
        """Append ``ids``; return the logits after ``ids[i]`` for each ``i`` in ``rows``.

        Backends that can evaluate a batch and keep chosen positions' logits do
        this in one model call; this fallback makes one call per token.
        """
        logits = [self.extend([t]) for t in ids]
        return np.stack([logits[i] for i in rows])

    @abstractmethod
    def rewind(self, n_tokens: int) -> None:
        """Forget every token past the first ``n_tokens`` of the sequence."""

    @property
    @abstractmethod
    def n_past(self) -> int:
        """How many tokens the current sequence holds."""

    def close(self) -> None:  # pragma: no cover - optional
        pass

    # -- decoding -----------------------------------------------------------
    def greedy(self, prompt_ids: list[int], max_new_tokens: int, stop: StopCheck | None = None) -> Generation:
        """Greedy decoding: argmax each step, stop at end-of-generation, ``stop`` or budget."""
        t0 = time.perf_counter()
        logits = self.prefill(prompt_ids)
        t1 = time.perf_counter()
        out: list[int] = []
        calls, reason = 1, "budget"
        eog = self.eog_ids
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
            logits = self.extend([tok])
            calls += 1
        t2 = time.perf_counter()
        return Generation(
            token_ids=out,
            text=self.detokenize(out),
            stop_reason=reason,
            model_calls=calls,
            prompt_seconds=t1 - t0,
            decode_seconds=t2 - t1,
        )
