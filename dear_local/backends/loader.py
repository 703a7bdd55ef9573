"""The one place that opens a GGUF with llama.cpp, and the CPU buffer choice it makes.

llama.cpp can move a model's weights into "extra" CPU buffer types at load time:
repacked layouts (``CPU_REPACK``, what makes Q4_0 and Q8_0 fast on AVX2) and,
in builds for Intel CPUs with AMX, the ``AMX`` buffer. The AMX path crashes
(SIGSEGV in ``ggml_backend_amx_mul_mat``, ggml-org/llama.cpp#20824) on every
quantized GGUF on the AMX machines this project was tried on, while BF16, which
is never repacked, runs. Plain CPU buffers (``use_extra_bufts = false``) avoid it.

Modes (``--cpu-buffers`` or ``DEAR_LOCAL_CPU_BUFFERS``):

- ``auto`` (default): ``plain`` when the llama.cpp build reports ``AMX_INT8 = 1``
  in ``llama_print_system_info()``, else ``extra``. A fixed rule rather than a
  probe: the crash depends on the build and the CPU, both known before loading;
  a probe on one small model cannot vouch for other shapes, and would add a
  child process and a cache to the first load. Where AMX does work, force
  ``extra``.
- ``extra``: llama.cpp's default, every extra buffer type the build has.
- ``plain``: plain CPU buffers only (llama.cpp's ``--no-repack``).

Memory mapping follows the buffers. A repacked tensor is copied out of the file into
its own buffer, but llama.cpp keeps the whole file mapped, and the pages it read stay
resident: both copies count, and an 8B Q4_K_M peaked at 9.3 GB with ``extra`` against
5.9 GB with ``plain``. So a quantized GGUF loaded with ``extra`` is read without mmap
(:func:`use_mmap_for`): each weight is then resident once, repacked or not. Float files
(F32, F16, BF16), which are not repacked, and ``plain`` keep mmap. A ``use_mmap``
passed to :func:`open_llama` wins.
"""

from __future__ import annotations

import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserInputError

CPU_BUFFER_MODES = ("auto", "extra", "plain")

# Serialises loads: the buffer choice is passed by wrapping a llama-cpp-python
# function for the duration of one ``Llama(...)`` call.
_LOAD_LOCK = threading.Lock()


@dataclass(frozen=True)
class BufferChoice:
    """What the loader will do: ``mode`` is ``extra`` or ``plain``; ``requested`` may be ``auto``."""

    mode: str
    requested: str
    reason: str

    @property
    def use_extra_bufts(self) -> bool:
        return self.mode == "extra"


def llama_system_info() -> str:
    """llama.cpp's own feature line, e.g. ``CPU : SSE3 = 1 | AVX2 = 1 | ... | REPACK = 1 |``.

    It describes the CPU backend this process loaded (:func:`~.cpu_variant.ensure_cpu_backend`).
    """
    import llama_cpp

    from .cpu_variant import ensure_cpu_backend

    ensure_cpu_backend()
    return llama_cpp.llama_print_system_info().decode("utf-8", "replace")


def cpu_features(info: str) -> dict[str, str]:
    """``{"AVX2": "1", "AMX_INT8": "1", ...}`` from a ``llama_print_system_info()`` line."""
    return dict(re.findall(r"([A-Z][A-Z0-9_]*) = ([^|\s]+)", info))


def check_cpu_buffers(requested: str | None) -> str:
    """A valid mode name (``auto`` for None or empty).

    Raises:
        UserInputError: for any other value, naming the valid ones.
    """
    mode = (requested or "auto").strip().lower()
    if mode not in CPU_BUFFER_MODES:
        raise UserInputError(
            f"unknown CPU buffer mode {requested!r}: use one of {', '.join(CPU_BUFFER_MODES)} "
            "(--cpu-buffers or DEAR_LOCAL_CPU_BUFFERS)"
        )
    return mode


def choose_cpu_buffers(requested: str | None = None, info: str | None = None) -> BufferChoice:
    """Decide the CPU buffer mode for this llama.cpp build.

    ``requested`` defaults to the ``DEAR_LOCAL_CPU_BUFFERS`` setting; ``info`` to
    this process's ``llama_print_system_info()`` (pass one to decide for another machine).

    Raises:
        UserInputError: an unknown mode.
    """
    if requested is None:
        from ..settings import get_settings

        requested = get_settings().cpu_buffers
    mode = check_cpu_buffers(requested)
    if mode != "auto":
        return BufferChoice(mode, mode, "set by --cpu-buffers or DEAR_LOCAL_CPU_BUFFERS")
    features = cpu_features(llama_system_info() if info is None else info)
    if features.get("AMX_INT8") == "1":
        return BufferChoice(
            "plain", "auto",
            "this llama.cpp build uses AMX, whose kernels crash on quantized models "
            "(ggml-org/llama.cpp#20824); plain CPU buffers avoid them",
        )
    return BufferChoice("extra", "auto", "no AMX in this llama.cpp build; repacked kernels are safe")


# ggml types that are never repacked into CPU_REPACK buffers: F32, F16, BF16 (ggml.h's enum ggml_type).
FLOAT_TYPES = frozenset({0, 1, 30})


def use_mmap_for(path: str | Path, choice: BufferChoice) -> bool:
    """Whether to memory-map ``path`` under ``choice``: not when its quantized weights would be repacked.

    Reads the GGUF's tensor table only (:func:`~dear_local.gguf_file.read_header`).
    """
    if not choice.use_extra_bufts:
        return True
    from ..gguf_file import read_header

    return all(t.ggml_type in FLOAT_TYPES for t in read_header(path).tensors)


@contextmanager
def _model_params(use_extra_bufts: bool, held=None):
    """Make llama-cpp-python's ``Llama`` start from params with ``use_extra_bufts`` set.

    ``Llama.__init__`` takes no argument for it, and builds its params from
    ``llama_cpp.llama_model_default_params()``, looked up at call time. With ``held``
    (a :class:`~dear_local.native_calls.CallbackErrors`), the load's progress callback
    cancels the load once Ctrl-C has arrived.
    """
    import llama_cpp.llama_cpp as lib

    original = lib.llama_model_default_params
    progress = None
    if held is not None:  # kept referenced while llama.cpp may call it
        progress = lib.llama_progress_callback(held.wrap(lambda fraction, user_data: not held.failed, False))

    def default_params():
        params = original()
        params.use_extra_bufts = use_extra_bufts
        if progress is not None:
            params.progress_callback = progress
        return params

    with _LOAD_LOCK:
        lib.llama_model_default_params = default_params
        try:
            yield
        finally:
            lib.llama_model_default_params = original


def open_llama(
    path: str | Path, *, cpu_buffers: str | None = None, lora: str | Path | None = None, lora_scale: float = 1.0,
    **kwargs,
):
    """Open a GGUF as a ``llama_cpp.Llama``, with the CPU buffer mode of :func:`choose_cpu_buffers`.

    ``lora`` is a GGUF LoRA adapter to apply at ``lora_scale`` (see :mod:`.lora`); the
    adapter's metadata is ``llm.lora_metadata``. ``kwargs`` go to ``llama_cpp.Llama``
    unchanged; without a ``use_mmap`` among them, :func:`use_mmap_for` decides.
    Returns ``(llm, choice)``.

    Raises:
        UserInputError: an unknown ``cpu_buffers`` mode, a bad ``lora_scale``.
        ModelNotFoundError, InvalidModelFileError: an adapter that is missing or does not fit.
        ValueError, RuntimeError: from llama-cpp-python when the file cannot be loaded.
    """
    import llama_cpp

    from .cpu_variant import ensure_cpu_backend

    ensure_cpu_backend()  # the CPU variant first: llama.cpp's feature line depends on it
    choice = choose_cpu_buffers(cpu_buffers)
    if "use_mmap" not in kwargs and not kwargs.get("vocab_only"):
        kwargs["use_mmap"] = use_mmap_for(path, choice)
    if lora is not None:
        from .lora import check_lora_file

        check_lora_file(lora)  # before the base loads
    from ..native_calls import hold_interrupts

    with hold_interrupts() as held, _model_params(choice.use_extra_bufts, held):  # Ctrl-C cancels the load
        llm = llama_cpp.Llama(model_path=str(path), **kwargs)
    if lora is not None:
        from .lora import attach_lora

        try:
            llm.lora_metadata = attach_lora(llm, lora, lora_scale)
        except BaseException:
            llm.close()
            raise
    return llm, choice
