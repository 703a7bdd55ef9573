"""Small helpers over llama-cpp-python's low-level API: log capture and a vocab-only model.

llama.cpp logs through one process-wide callback. :class:`LogCapture` swaps in
its own for the duration of a call, hands each line to a function (the
quantizer counts tensors from them), keeps every message (a message's CONT lines
joined to it) for error reports, then puts llama-cpp-python's callback back.
While it is active, Ctrl-C and any exception raised by that function are held
(see :mod:`dear_local.native_calls`) and raised when the block ends, instead of
being lost inside the ctypes callback.

:func:`load_vocab` loads only a GGUF's tokenizer (``vocab_only``), for checks that
compare token ids without loading weights.
"""

from __future__ import annotations

import contextlib
import ctypes
from pathlib import Path
from typing import Callable, Iterator

# ggml's `enum ggml_log_level` in the llama.cpp that llama-cpp-python 0.3.36 vendors
# (ggml/include/ggml.h): NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 (continues the last line).
# llama-cpp-python's own _logger.py still carries the older numbering (ERROR 3), so it is not used.
GGML_LOG_LEVEL_ERROR = 4
GGML_LOG_LEVEL_CONT = 5


class LogCapture:
    """``with LogCapture(on_line) as log: <llama.cpp call>``; then ``log.errors`` or ``log.messages``.

    ``on_line`` gets each piece of text llama.cpp logs, as it comes. An exception raised
    by ``on_line``, or a SIGINT during the block, is raised as the block ends (a SIGINT
    as ``KeyboardInterrupt``).
    """

    def __init__(self, on_line: Callable[[str], None] | None = None):
        import llama_cpp

        from .native_calls import CallbackErrors

        self.callback_errors = CallbackErrors()
        self._held = None
        self._messages: list[list] = []  # [level, text] per message, its CONT lines joined

        def callback(level, text, user_data):
            line = text.decode("utf-8", "replace")
            if level != GGML_LOG_LEVEL_CONT or not self._messages:
                self._messages.append([level, line])
            else:
                self._messages[-1][1] += line
            if on_line is not None:
                on_line(line)

        # keep a reference while llama.cpp holds the pointer
        self._callback = llama_cpp.llama_log_callback(self.callback_errors.wrap(callback))

    @property
    def messages(self) -> list[str]:
        """Every message llama.cpp logged, in order, stripped of surrounding whitespace."""
        return [text.strip() for _, text in self._messages]

    @property
    def errors(self) -> list[str]:
        """The error messages llama.cpp logged, stripped of surrounding whitespace."""
        return [text.strip() for level, text in self._messages if level == GGML_LOG_LEVEL_ERROR]

    def __enter__(self) -> "LogCapture":
        import llama_cpp

        from .native_calls import hold_interrupts

        self._held = hold_interrupts(self.callback_errors)
        self._held.__enter__()
        llama_cpp.llama_log_set(self._callback, ctypes.c_void_p(0))
        return self

    def __exit__(self, *exc) -> None:
        import llama_cpp
        from llama_cpp import _logger

        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
        held, self._held = self._held, None
        held.__exit__(*exc)  # raises a held Ctrl-C or callback exception when the block itself did not raise


class Vocab:
    """A GGUF's tokenizer, loaded without weights."""

    def __init__(self, model, vocab):
        self._model = model
        self.vocab = vocab

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = False) -> list[int]:
        import llama_cpp

        data = text.encode("utf-8")
        n_max = len(data) + 16
        buf = (llama_cpp.llama_token * n_max)()
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, n_max, add_special, parse_special)
        if n < 0:
            raise RuntimeError(f"llama_tokenize needs {-n} tokens")
        return list(buf[:n])

    def is_eog(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))


@contextlib.contextmanager
def load_vocab(path: str | Path) -> Iterator[Vocab]:
    """Load only the tokenizer of a GGUF file (raises ValueError if llama.cpp refuses it)."""
    import llama_cpp

    from .backends.cpu_variant import ensure_cpu_backend

    ensure_cpu_backend()  # llama.cpp loads no model, even vocab-only, before a CPU backend
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    with LogCapture() as log:
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise ValueError("; ".join(log.errors[-3:]) or f"llama.cpp could not load {path}")
    try:
        yield Vocab(model, llama_cpp.llama_model_get_vocab(model))
    finally:
        llama_cpp.llama_model_free(model)
