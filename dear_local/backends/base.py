"""The backend protocol: what the ranking engine needs from a model runtime.

A backend holds one model and one evaluation state. The engine drives it with
``prefill`` (start from a prompt), ``extend`` (feed more tokens) and
``rewind`` (forget tokens past a position), and reads the logits at the last
position. Decoding itself lives in :mod:`dear_local.decoding`, written once
against these primitives, so llama.cpp and the transformers reference decode
with the very same loops.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ..chat_template import render_chat


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
