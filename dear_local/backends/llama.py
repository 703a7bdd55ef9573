"""The llama.cpp backend, through llama-cpp-python.

Only llama-cpp-python's model loading, tokenizer and ``eval`` are used; the
prompt, chat template rendering, decoding loop and parser are dear-local's own,
so this backend decodes exactly like the transformers reference.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from pathlib import Path

import numpy as np

from ..errors import InvalidModelFileError, ModelNotFoundError
from ..gguf_file import POINTWISE, Keys, check_gguf, read_header
from .base import Backend
from .cpu_variant import ensure_cpu_backend
from .limits import check_load_settings
from .loader import choose_cpu_buffers, open_llama

def check_gguf_file(path: str | Path) -> Path:
    """Fail early, with a clear message, on a missing, non-GGUF, empty or truncated file.

    See :func:`dear_local.gguf_file.check_gguf` for every case it tells apart.
    """
    path = Path(path)
    if not path.exists():
        raise ModelNotFoundError(f"model file {path} does not exist; check the path or run `dear-local pull`")
    if not path.is_dir():
        from ..store import check_regular_file

        check_regular_file(path, "model file", "pass a .gguf file")
    check_gguf(path)
    return path


def is_pointwise_file(path: str | Path) -> bool:
    """Whether the GGUF at ``path`` is a pointwise ranker written by ``dear-local convert`` (header only).

    Raises:
        ModelNotFoundError, InvalidModelFileError: as :func:`dear_local.gguf_file.read_header`.
    """
    return read_header(path).get(Keys.KIND) == POINTWISE


def refuse_pointwise(path: str | Path) -> None:
    """Fail with one line when a listwise model is expected and ``path`` is a pointwise ranker.

    Raises:
        UserInputError: ``path`` is a pointwise ranker (DeAR-P).
    """
    if is_pointwise_file(path):
        from ..errors import UserInputError

        raise UserInputError(
            f"{Path(path).name} is a pointwise ranker (DeAR-P): it scores one document at a time and writes "
            "no ranking; pass it as --first-stage (Python: first_stage=), alone or in front of a listwise model "
            "(DeAR-L) as --model"
        )


def load_failed(path: Path, exc: Exception) -> InvalidModelFileError:
    """The one-line error for a GGUF llama.cpp could not load (``exc`` from llama-cpp-python)."""
    return InvalidModelFileError(
        f"llama.cpp could not load {path}: it is truncated, corrupt or of an unsupported "
        f"architecture ({exc}); download it again with `dear-local pull --force` or re-convert it"
    )


@contextlib.contextmanager
def _quiet_stderr(enabled: bool):
    """Silence llama.cpp's C-level logging on fd 2 while loading."""
    if not enabled:
        yield
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class LlamaCppBackend(Backend):
    """A GGUF opened by llama.cpp through :func:`~dear_local.backends.loader.open_llama`.

    ``cpu_buffers`` is ``auto``/``extra``/``plain`` (default: ``DEAR_LOCAL_CPU_BUFFERS``);
    the resolved :class:`~dear_local.backends.loader.BufferChoice` is ``self.cpu_buffers``.
    ``lora`` is a GGUF LoRA adapter applied to the model at ``lora_scale`` (see
    :mod:`dear_local.backends.lora`). ``flash_attn`` turns on llama.cpp's flash attention
    (False here, llama-cpp-python's own default; ``Reranker`` and the CLI pass the setting, on by default). ``use_mmap`` None lets the loader
    decide (:func:`~dear_local.backends.loader.use_mmap_for`: no mmap for repacked weights).

    Raises:
        ModelNotFoundError, InvalidModelFileError: a missing or unloadable file or adapter.
        UserInputError: an unknown ``cpu_buffers`` mode, or a load setting out of range
            (:func:`check_load_settings`).
    """

    name = "llama.cpp"

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int | None = 4096,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        n_batch: int = 512,
        vocab_only: bool = False,
        cpu_buffers: str | None = None,
        verbose: bool = False,
        lora: str | Path | None = None,
        lora_scale: float = 1.0,
        flash_attn: bool = False,
        use_mmap: bool | None = None,
    ) -> None:
        import llama_cpp

        self._llama_cpp = llama_cpp
        check_load_settings(n_ctx=n_ctx, n_threads=n_threads, n_gpu_layers=n_gpu_layers, n_batch=n_batch)
        if lora is not None:  # the adapter's own mistakes first (a PEFT folder, a missing file)
            from .lora import check_lora_file

            check_lora_file(lora)
        path = check_gguf_file(model_path)
        if not vocab_only and path.is_file():
            refuse_pointwise(path)
        self.model_label = path.name if lora is None else f"{path.name} + {Path(lora).name}"
        self.path = path
        self.lora = Path(lora) if lora is not None else None
        self.cpu_buffers = choose_cpu_buffers(cpu_buffers)  # a bad mode fails here, before loading
        ensure_cpu_backend()  # a bad DEAR_LOCAL_CPU_VARIANT is its own error, not "a corrupt model file"
        try:
            with _quiet_stderr(not verbose):
                self.llm, _ = open_llama(
                    path,
                    cpu_buffers=self.cpu_buffers.mode,
                    lora=lora,
                    lora_scale=lora_scale,
                    n_ctx=n_ctx or 0,
                    n_threads=n_threads,
                    n_threads_batch=n_threads,
                    n_gpu_layers=n_gpu_layers,
                    n_batch=n_batch,
                    vocab_only=vocab_only,
                    logits_all=False,
                    verbose=verbose,
                    **({"flash_attn": True} if flash_attn else {}),
                    **({"use_mmap": use_mmap} if use_mmap is not None else {}),
                )
        except (ValueError, RuntimeError) as exc:
            raise load_failed(path, exc) from exc
        model = self.llm._model
        self._vocab = model.vocab
        self.n_vocab = model.n_vocab()
        self.n_ctx = self.llm.n_ctx()
        self.n_ctx_train = model.n_ctx_train()
        meta = self.llm.metadata
        self.metadata = meta
        self.lora_metadata = getattr(self.llm, "lora_metadata", None)  # the adapter's, with ``lora``
        self.chat_template = meta.get("tokenizer.chat_template")
        self.add_bos = bool(model.add_bos_token())
        bos = model.token_bos()
        self.bos_token = self._piece(bos) if bos >= 0 else ""
        eos = model.token_eos()
        self.eos_token = self._piece(eos) if eos >= 0 else ""
        is_eog = llama_cpp.llama_vocab_is_eog
        self.eog_ids = frozenset(t for t in range(self.n_vocab) if is_eog(self._vocab, t))
        self._seq: list[int] = []
        self._piece_buffer = ctypes.create_string_buffer(64)

    def _piece(self, tok: int) -> str:
        return self._llama_cpp.llama_vocab_get_text(self._vocab, tok).decode("utf-8", "replace")

    # -- tokens -------------------------------------------------------------
    def tokenize(self, text: str, *, add_bos: bool, special: bool = False) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

    def special_token_ids(self) -> dict[str, int]:
        found = self.__dict__.get("_special_ids")
        if found is None:
            lib = self._llama_cpp
            # llama.cpp parses control tokens only when asked to; user-defined
            # tokens are matched either way, so they are not markers.
            control = lib.LLAMA_TOKEN_ATTR_CONTROL
            found = {}
            for tok in range(self.n_vocab):
                if lib.llama_vocab_get_attr(self._vocab, tok) & control:
                    text = self._piece(tok)
                    if text and self.tokenize(text, add_bos=False, special=True) == [tok]:
                        found[text] = tok
            self._special_ids = found
        return found

    def detokenize(self, ids: list[int]) -> str:
        # Joined piece by piece: llama-cpp-python's own detokenize reads each
        # piece into a 32-byte buffer and mangles longer tokens (runs of spaces,
        # dashes, ...).
        return b"".join(map(self.token_bytes, ids)).decode("utf-8", "replace")

    def token_text(self, tok: int) -> str:
        return self._piece(tok)

    def token_bytes(self, tok: int) -> bytes:
        """The raw bytes one token stands for (special tokens as their text)."""
        buf = self._piece_buffer
        n = self._llama_cpp.llama_token_to_piece(self._vocab, tok, buf, len(buf), 0, True)
        if n < 0:  # longer than the buffer: -n is the size it needs
            buf = self._piece_buffer = ctypes.create_string_buffer(-n)
            n = self._llama_cpp.llama_token_to_piece(self._vocab, tok, buf, len(buf), 0, True)
        return buf.raw[:n]

    # -- evaluation state ---------------------------------------------------
    def _logits(self, i: int = -1) -> np.ndarray:
        """A copy of the logits at output ``i`` of the last batch (the last one by default)."""
        ptr = self._llama_cpp.llama_get_logits_ith(self.llm._ctx.ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def prefill(self, ids: list[int]) -> np.ndarray:
        # Always from scratch: reusing a cached prefix changes how the prompt is
        # split into batches, which shifts logits slightly and can flip a
        # near-tie, so the same prompt would not always give the same ranking.
        self.rewind(0)
        return self.extend(ids)

    def extend(self, ids: list[int]) -> np.ndarray:
        self.llm.eval(ids)
        self._seq.extend(ids)
        return self._logits()

    def extend_rows(self, ids: list[int], rows: list[int]) -> np.ndarray:
        # llama-cpp-python's ``eval`` keeps only the last position's logits (or, with
        # logits_all, every position of the whole context): flag the wanted rows in
        # llama.cpp's batch and read them back one by one.
        llm = self.llm
        llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
        wanted = set(rows)
        found: dict[int, np.ndarray] = {}
        for start in range(0, len(ids), llm.n_batch):
            chunk = list(ids[start : start + llm.n_batch])
            n_past = llm.n_tokens
            llm._batch.set_batch(batch=chunk, n_past=n_past, logits_all=False)
            flags = llm._batch.batch.logits
            for i in range(len(chunk)):
                flags[i] = (start + i) in wanted
            llm._ctx.decode(llm._batch)
            llm.input_ids[n_past : n_past + len(chunk)] = chunk
            llm.n_tokens += len(chunk)
            for i in range(len(chunk)):
                if start + i in wanted:
                    found[start + i] = self._logits(i)
        self._seq.extend(ids)
        return np.stack([found[i] for i in rows])

    def rewind(self, n_tokens: int) -> None:
        self.llm.n_tokens = n_tokens
        del self._seq[n_tokens:]

    @property
    def n_params(self) -> int:
        """Number of weights in the model (llama.cpp's count), for bits per weight."""
        return int(self.llm._model.n_params())

    @property
    def n_past(self) -> int:
        return len(self._seq)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.llm.close()
