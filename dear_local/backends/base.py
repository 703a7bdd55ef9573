"""What the ranking engine needs from a model runtime, as three small interfaces.

- :class:`Tokenizer`: token ids for text and text for ids, the vocabulary, the chat template.
- :class:`Evaluator`: one evaluation state, driven with ``prefill`` (start from a prompt),
  ``extend`` (feed more tokens) and ``rewind`` (forget tokens past a position), giving the
  logits at the last position.
- :class:`ModelRuntime`: a tokenizer with a model behind it, its context size, a label, what it
  can do (:class:`Capabilities`) and ``close``.

A :class:`Backend` is a runtime that evaluates locally (llama.cpp here, transformers in
``convert``): both interfaces. A server backend (:class:`dear_local.remote.RemoteBackend`) is a
runtime whose model answers requests instead (:class:`dear_local.decoding.remote.RemoteModel`),
so it has no evaluation primitives to stub out.

Decoding lives in :mod:`dear_local.decoding`, written once against these primitives, so
llama.cpp and the transformers reference decode with the very same loops. Callers ask a
runtime's :class:`Capabilities` (through :func:`capabilities_of`), never its class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable

import numpy as np

from ..chat_template import render_chat


@dataclass(frozen=True)
class Capabilities:
    """What a runtime can do, for the callers that would otherwise ask for its class.

    - ``local_evaluation``: it has the :class:`Evaluator` primitives, and the local decoding
      loops run on it; otherwise decoding goes through requests (``dear_local.decoding.remote``).
    - ``concurrent_queries``: several queries may run on it at once, from several threads.
    - ``context_advice``: how to get a larger context, for the message of a prompt that does not fit.
    - ``request_errors``: it counts failed requests (:meth:`ModelRuntime.request_error_count`).
    """

    local_evaluation: bool = True
    concurrent_queries: bool = False
    context_advice: str = "a larger --n-ctx"
    request_errors: bool = False


LOCAL = Capabilities()


class Tokenizer(ABC):
    """Token ids, the vocabulary and the chat template of one model."""

    n_vocab: int
    add_bos: bool
    bos_token: str
    eos_token: str
    eog_ids: frozenset[int]
    chat_template: str | None

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
        raise NotImplementedError(f"the {getattr(self, 'name', 'backend')} backend does not expose token bytes")

    def vocab_pieces(self) -> list[bytes]:
        """``token_bytes`` of every token id, computed once per backend and kept."""
        return self.memo("_vocab_pieces", lambda: [self.token_bytes(t) for t in range(self.n_vocab)])

    def memo(self, key: str, make: Callable[[], Any]) -> Any:
        """A value derived from the vocabulary, made once by ``make`` and kept on this tokenizer."""
        value = self.__dict__.get(key)
        if value is None:
            value = make()
            self.__dict__[key] = value
        return value

    @abstractmethod
    def token_text(self, tok: int) -> str:
        """The vocabulary entry of one token as the tokenizer stores it (e.g. ``Ġthe``)."""

    def render_chat(self, messages: list[dict]) -> str:
        return render_chat(
            self.chat_template, messages, bos_token=self.bos_token, eos_token=self.eos_token
        )


class Evaluator(ABC):
    """One evaluation state: the primitives the local decoding loops run on."""

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


class ModelRuntime(Tokenizer):
    """A model that ranks: its tokenizer, context size, label and :class:`Capabilities`."""

    name: str = "backend"
    n_ctx: int
    model_label: str = ""
    capabilities: Capabilities = LOCAL
    # The GGUF's metadata and, with a LoRA adapter applied at run time, the adapter's (llama.cpp).
    metadata: Mapping[str, str] = MappingProxyType({})
    lora_metadata: Mapping[str, str] | None = None

    def start_query(self) -> None:
        """A new query starts on this thread (a server backend picks the least-used server)."""

    def request_error_count(self) -> int:
        """Failed requests so far (with ``capabilities.request_errors``; 0 otherwise)."""
        return 0

    def close(self) -> None:  # pragma: no cover - optional
        pass


class Backend(ModelRuntime, Evaluator):
    """Base class for a model runtime that evaluates locally (llama.cpp here, transformers in ``convert``)."""


def capabilities_of(runtime) -> Capabilities:
    """What ``runtime`` can do: the ``capabilities`` it or its nearest class declares.

    A declaration equal to the default (a local model's) does not hide one further along the
    method resolution order, so a class that mixes :class:`Backend` with
    :class:`~dear_local.decoding.remote.RemoteModel` (what a server backend was before the
    interfaces were split) and declares nothing gets a server's capabilities.
    """
    own = getattr(runtime, "__dict__", {}).get("capabilities")
    if own is not None:
        return own
    for klass in type(runtime).__mro__:
        caps = vars(klass).get("capabilities")
        if caps is not None and caps != LOCAL:
            return caps
    return LOCAL
