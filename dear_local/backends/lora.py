"""Applying a GGUF LoRA adapter to a loaded base model, through llama.cpp's adapter API.

llama.cpp keeps the base weights as they are and adds ``scale · alpha / r · B·(A·x)``
next to every adapted matrix product, so one quantized base GGUF serves any number of
adapters. The adapter file is llama.cpp's GGUF LoRA format (``general.type = adapter``),
as ``dear-local convert-lora`` writes it.

llama-cpp-python's own ``Llama(lora_path=...)`` turns memory mapping off for the base
(a leftover of llama.cpp's old adapter code, which rewrote the weights); calling the
adapter API after loading keeps the base mapped.
"""

from __future__ import annotations

import contextlib
import ctypes
from pathlib import Path

from ..errors import InvalidModelFileError, ModelNotFoundError, UserInputError
from ..gguf_file import MAGIC as GGUF_MAGIC
from ..gguf_file import check_gguf

# Where dear-local records a LoRA adapter's provenance, in a merged model and in a GGUF adapter.
KEY_LORA_REPO = "dear_local.lora.repo"
KEY_LORA_REVISION = "dear_local.lora.revision"
KEY_LORA_SHA256 = "dear_local.lora.sha256"  # of the PEFT adapter's adapter_model.safetensors
KEY_LORA_BASE = "dear_local.lora.base_model"  # the adapter's base_model_name_or_path


def check_lora_file(path: str | Path) -> Path:
    """Fail early on a missing or non-GGUF adapter file; return it as a Path.

    Raises:
        ModelNotFoundError: no such file.
        InvalidModelFileError: not a GGUF (a PEFT adapter directory, a safetensors file, ...).
    """
    path = Path(path).expanduser()
    if path.is_dir() and (path / "adapter_config.json").is_file():
        raise InvalidModelFileError(
            f"{path} is a PEFT adapter directory; convert it to a GGUF adapter first: "
            f"dear-local convert-lora {path} --base BASE.gguf --out DIR"
        )
    if not path.exists():
        raise ModelNotFoundError(f"LoRA adapter {path} does not exist; check the --lora path")
    if not path.is_dir():
        from ..store import check_regular_file

        check_regular_file(path, "LoRA adapter", "pass a GGUF adapter file to --lora")
    else:
        raise InvalidModelFileError(f"LoRA adapter {path} is a folder; pass the GGUF adapter file to --lora")
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise InvalidModelFileError(
                f"LoRA adapter {path} is not a GGUF file; convert a PEFT adapter with "
                "`dear-local convert-lora ADAPTER --base BASE.gguf --out DIR`"
            )
    check_gguf(path, what="LoRA adapter")  # empty, truncated or a corrupt table of contents
    return path


@contextlib.contextmanager
def _llama_log():
    """Collect llama.cpp's log lines (the reason a load failed is one of them), then give logging back.

    llama-cpp-python's own callback maps llama.cpp's log levels as they once were and so
    drops today's error lines when not verbose; a callback of our own sees every line.
    """
    import llama_cpp
    from llama_cpp import _logger

    from ..native_calls import hold_interrupts

    lines: list[str] = []
    with hold_interrupts() as errors:  # Ctrl-C or a callback error is raised after the native call

        def callback(level, text, user_data):
            lines.append(text.decode("utf-8", "replace").rstrip("\n"))

        c_callback = llama_cpp.llama_log_callback(errors.wrap(callback))
        llama_cpp.llama_log_set(c_callback, ctypes.c_void_p(0))
        try:
            yield lines
        finally:
            llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


def attach_lora(llm, path: str | Path, scale: float = 1.0) -> dict[str, str]:
    """Load the GGUF LoRA adapter at ``path`` for ``llm`` (a ``llama_cpp.Llama``) and apply it with ``scale``.

    ``scale`` multiplies the adapter's own ``alpha / r`` (1.0: as trained; 0: the base
    alone). The adapter is freed with ``llm``. Returns the adapter's GGUF metadata
    (``general.name``, ``adapter.lora.alpha``, ``dear_local.lora.sha256``, ...) as strings.

    Raises:
        ModelNotFoundError, InvalidModelFileError: a missing file, or one llama.cpp
            refuses (not an adapter, another architecture, shapes of another base),
            with llama.cpp's own reason.
        UserInputError: a scale that is not a finite number.
    """
    import math

    import llama_cpp

    if not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise UserInputError(f"--lora-scale must be a finite number, got {scale!r}")
    path = check_lora_file(path)
    with _llama_log() as lines:
        adapter = llama_cpp.llama_adapter_lora_init(llm._model.model, str(path).encode("utf-8"))
    if not adapter:
        failed = [line for line in lines if "failed" in line] or lines[-1:]
        reason = failed[-1].split(": ", 1)[-1].strip() if failed else ""
        raise InvalidModelFileError(
            f"llama.cpp could not apply the LoRA adapter {path} to {Path(llm.model_path).name}"
            f"{f' ({reason.strip()})' if reason else ''}; convert the adapter against this base: "
            "dear-local convert-lora ADAPTER --base BASE.gguf --out DIR"
        )
    llm._stack.callback(llama_cpp.llama_adapter_lora_free, adapter)  # freed before the model
    adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter)
    scales = (ctypes.c_float * 1)(scale)
    if llama_cpp.llama_set_adapters_lora(llm._ctx.ctx, adapters, 1, scales) != 0:
        raise InvalidModelFileError(f"llama.cpp could not apply the LoRA adapter {path}; re-convert it with dear-local convert-lora")
    return adapter_metadata(adapter)


def adapter_metadata(adapter) -> dict[str, str]:
    """Every metadata key of a loaded adapter, with its value as llama.cpp prints it."""
    import llama_cpp

    buf = ctypes.create_string_buffer(1024)
    out = {}
    for i in range(llama_cpp.llama_adapter_meta_count(adapter)):
        if llama_cpp.llama_adapter_meta_key_by_index(adapter, i, buf, len(buf)) < 0:
            continue
        key = buf.value.decode("utf-8", "replace")
        if llama_cpp.llama_adapter_meta_val_str_by_index(adapter, i, buf, len(buf)) >= 0:
            out[key] = buf.value.decode("utf-8", "replace")
    return out
