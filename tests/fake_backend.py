"""A deterministic fake backend for the fast test tier.

It implements the :class:`~dear_local.backends.base.Backend` protocol over a
tiny scripted vocabulary, so the layers above the backend (CLI, HTTP server,
the check's bookkeeping) can be tested in milliseconds. Every behaviour that
depends on a real model stays covered by the slow tier on the real stand-ins.

Vocabulary: one token per byte (ids 0-255) plus four special tokens. The
"model" reads the window size and id base off the prompt of either template
and answers with a scripted permutation (by default the ids in reverse order,
so every answer reorders its input), one byte token per step, then ends the
turn. Any prefix of that answer is continued; anything else gets an end of turn.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import numpy as np

from dear_local.backends.base import Backend
from dear_local.backends.factory import open_backend as real_open_backend

SPECIALS = ["<s>", "</s>", "<|im_start|>", "<|im_end|>"]
BOS, EOS, IM_START, IM_END = range(256, 256 + len(SPECIALS))
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Where each template's prompt ends and the answer begins.
PROMPT_ENDS = ("<|im_start|>assistant\n", "Output the ranking as a list of numbers.")
_SPECIAL_RE = re.compile("(" + "|".join(re.escape(s) for s in SPECIALS) + ")")


def reverse_order(n: int) -> list[int]:
    """The default script: the last window position first."""
    return list(range(n))[::-1]


def input_order(n: int) -> list[int]:
    """A model that keeps the input order (for a file named ``*identity*``)."""
    return list(range(n))


def no_answer(n: int) -> list[int]:
    """A model whose answer holds no ranking (for a file named ``*noanswer*``): it ends the turn at once."""
    return []


class FakeBackend(Backend):
    """A scripted stand-in for a model; ``script(n)`` gives the window positions in answer order."""

    name = "fake"

    def __init__(self, path: str | Path | None = None, *, script: Callable[[int], list[int]] | None = None,
                 n_ctx: int | None = 32768, **_load_options) -> None:
        self.model_label = Path(path).name if path else "fake"
        self.script = script or (
            input_order if "identity" in self.model_label
            else no_answer if "noanswer" in self.model_label
            else reverse_order
        )
        self.n_ctx = n_ctx or 32768
        self.n_vocab = 256 + len(SPECIALS)
        self.add_bos = True
        self.bos_token, self.eos_token = "<s>", "</s>"
        self.eog_ids = frozenset({EOS, IM_END})
        self.chat_template = CHATML
        self._seq: list[int] = []
        self._text, self._ends = bytearray(), []  # see prefill
        self.calls = 0

    # -- tokens ---------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_bos: bool, special: bool = False) -> list[int]:
        ids = [BOS] if add_bos else []
        for part in _SPECIAL_RE.split(text) if special else [text]:
            if special and part in SPECIALS:
                ids.append(256 + SPECIALS.index(part))
            else:
                ids.extend(part.encode("utf-8"))
        return ids

    def special_token_ids(self) -> dict[str, int]:
        return {text: 256 + i for i, text in enumerate(SPECIALS)}

    def detokenize(self, ids: list[int]) -> str:
        return b"".join(map(self.token_bytes, ids)).decode("utf-8", "replace")

    def token_bytes(self, tok: int) -> bytes:
        return bytes([tok]) if tok < 256 else SPECIALS[tok - 256].encode()

    def token_text(self, tok: int) -> str:
        return self.token_bytes(tok).decode("latin-1")

    # -- the scripted model ---------------------------------------------------------------
    def _answer(self, prompt: str) -> str:
        n = int(re.search(r"provide you with (\d+) passages", prompt).group(1))
        base = 0 if "[0]" in prompt else 1
        return " > ".join(f"[{base + k}]" for k in self.script(n))

    def _logits_after(self) -> np.ndarray:
        text = self._text.decode("utf-8", "replace")
        end = max((text.rfind(m) + len(m) for m in PROMPT_ENDS if m in text), default=len(text))
        answer, written = self._answer(text[:end]).encode(), text[end:].encode()
        if answer.startswith(written) and len(written) < len(answer):
            nxt = answer[len(written)]
        else:
            nxt = EOS
        logits = np.zeros(self.n_vocab, dtype=np.float32)
        logits[nxt] = 10.0
        return logits

    # -- evaluation state -----------------------------------------------------------------
    # The sequence's bytes are kept as it grows (``_ends[i]``: where token i's bytes end), so reading
    # the text after each generated token costs one decode, not a Python call per token of the prompt.
    def prefill(self, ids: list[int]) -> np.ndarray:
        self._seq, self._text, self._ends = [], bytearray(), []
        return self.extend(ids)

    def extend(self, ids: list[int]) -> np.ndarray:
        self._seq.extend(ids)
        for tok in ids:
            self._text += self.token_bytes(tok)
            self._ends.append(len(self._text))
        self.calls += 1
        if len(self._seq) > self.n_ctx:
            raise RuntimeError(f"fake backend: {len(self._seq)} tokens overflow the context of {self.n_ctx}")
        return self._logits_after()

    def rewind(self, n_tokens: int) -> None:
        del self._seq[n_tokens:], self._ends[n_tokens:]
        del self._text[self._ends[-1] if self._ends else 0:]

    @property
    def n_past(self) -> int:
        return len(self._seq)

    @property
    def n_params(self) -> int:
        return 1_000_000


def fake_open_backend(script: Callable[[int], list[int]] | None = None) -> Callable:
    """An ``open_backend`` that loads every GGUF, the model's or a server tokenizer's, as a :class:`FakeBackend`.

    Patch it over :func:`dear_local.backends.factory.open_backend`, the one place dear-local opens a
    model: the choice of local, LoRA or servers stays the real one.
    """

    def loader(path=None, **load_options):
        return FakeBackend(path, script=script, **load_options)

    def open_backend(model, options, settings=None, *, profile=None, verbose=False, loader=loader):
        return real_open_backend(model, options, settings, profile=profile, verbose=verbose, loader=loader)

    return open_backend
