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

import ctypes
from pathlib import Path

from ..errors import InvalidModelFileError, ModelNotFoundError, UserInputError
from ..gguf_file import MAGIC as GGUF_MAGIC  # noqa: F401 - kept importable from here
from ..gguf_file import Keys, check_gguf, has_gguf_magic
from ..llama_cpp_lib import LogCapture

# Where dear-local records a LoRA adapter's provenance, in a merged model and in a GGUF adapter:
# the names under which these keys were first published; see :class:`dear_local.gguf_file.Keys`.
KEY_LORA_REPO = Keys.LORA_REPO
KEY_LORA_REVISION = Keys.LORA_REVISION
KEY_LORA_SHA256 = Keys.LORA_SHA256
KEY_LORA_BASE = Keys.LORA_BASE_MODEL


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
    if not has_gguf_magic(path):
        raise InvalidModelFileError(
            f"LoRA adapter {path} is not a GGUF file; convert a PEFT adapter with "
            "`dear-local convert-lora ADAPTER --base BASE.gguf --out DIR`"
        )
    check_gguf(path, what="LoRA adapter")  # empty, truncated or a corrupt table of contents
    return path


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
    with LogCapture() as log:
        adapter = llama_cpp.llama_adapter_lora_init(llm._model.model, str(path).encode("utf-8"))
    if not adapter:
        lines = log.messages  # a message's CONT lines joined to it
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
