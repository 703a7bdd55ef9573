"""Moved to the runtime: :mod:`dear_local.llama_cpp_lib` (log capture and the vocab-only loader).

The names stay importable from here.
"""

from __future__ import annotations

from dear_local.llama_cpp_lib import GGML_LOG_LEVEL_CONT, GGML_LOG_LEVEL_ERROR, LogCapture, Vocab, load_vocab

__all__ = ["GGML_LOG_LEVEL_CONT", "GGML_LOG_LEVEL_ERROR", "LogCapture", "Vocab", "load_vocab"]
