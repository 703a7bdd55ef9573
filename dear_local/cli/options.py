"""Options shared by several commands, declared once as typer ``Annotated`` aliases."""

from __future__ import annotations

from contextlib import contextmanager
from enum import Enum
from typing import Annotated, Optional

import typer

import math

from ..limits import MAX_CTX, MAX_THREADS
from ..contract import DECODING_MODES
from ..contract.profile import MAX_WINDOW, StrideError
from ..errors import UserInputError
from ..limits import MAX_LORA_SCALE, MAX_REQUEST_TIMEOUT
from ..run_options import RunOptions

MAX_GPU_LAYERS = 1 << 16  # as check_load_settings


def finite(value: float | None) -> float | None:
    """A typer callback: refuse ``nan`` (click's FloatRange lets it through; ``inf`` fails its max)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


class CpuBuffers(str, Enum):
    """llama.cpp's CPU weight buffers; see ``dear_local.backends.loader``."""

    auto = "auto"
    extra = "extra"
    plain = "plain"


ModelOption = Annotated[
    str, typer.Option("--model", "-m", help="A .gguf file, or NAME[:QUANT] from `dear-local models`.")
]
TemplateOption = Annotated[
    Optional[str],
    typer.Option(
        "--template", "--profile",
        help="Prompt template (see `dear-local templates`); default: the model's (check: the reference's, "
        "which it must match).",
    ),
]
DecodingOption = Annotated[
    Optional[str],
    typer.Option("--decoding", help=f"One of: {', '.join(DECODING_MODES)}; default: the model's."),
]
WindowOption = Annotated[
    Optional[int],
    typer.Option("--window", min=1, max=MAX_WINDOW, help="Passages per window (default: the model's profile, 20)."),
]
StrideOption = Annotated[
    Optional[int],
    typer.Option("--stride", min=1, max=MAX_WINDOW,
                 help="Window stride, at most --window (default: the model's profile, 10)."),
]
ThreadsOption = Annotated[
    Optional[int],
    typer.Option("--threads", min=1, max=MAX_THREADS, help="CPU threads (default: llama.cpp's choice)."),
]
GpuLayersOption = Annotated[
    int, typer.Option("--gpu-layers", min=-1, max=MAX_GPU_LAYERS, help="Layers to offload to a GPU, if llama.cpp was built with one (-1: all).")
]
NCtxOption = Annotated[
    Optional[int],
    typer.Option("--n-ctx", min=1, max=MAX_CTX, help="Context size in tokens (default: sized from the profile)."),
]
CpuBuffersOption = Annotated[
    Optional[CpuBuffers],
    typer.Option(
        "--cpu-buffers",
        help="llama.cpp weight buffers: auto (plain on AMX builds, else extra), extra or plain. "
        "Default: $DEAR_LOCAL_CPU_BUFFERS, else auto; see `dear-local env`.",
        show_default=False,
    ),
]


class Protocol(str, Enum):
    """How to talk to --server; see ``dear_local.remote.protocols``."""

    auto = "auto"
    llama_server = "llama-server"
    openai = "openai"


ServerOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--server",
        help="Run the model on this inference server (llama-server, vLLM, SGLang), e.g. http://127.0.0.1:8080; "
        "repeat for a fleet. --model then only lends its tokenizer (any quant of the served model). "
        "A key for the servers comes from $DEAR_LOCAL_SERVER_API_KEY.",
        show_default=False,
    ),
]
ProtocolOption = Annotated[
    Protocol,
    typer.Option("--protocol", help="Server protocol: auto (llama-server's /props, else openai), llama-server or "
                 "openai (vLLM/SGLang /v1/completions)."),
]
ServedModelOption = Annotated[
    Optional[str],
    typer.Option("--served-model", help="Model name an openai-protocol server expects (default: the first it lists)."),
]
RequestTimeoutOption = Annotated[
    float, typer.Option("--request-timeout", min=1.0, max=MAX_REQUEST_TIMEOUT, callback=finite, help="Seconds one server request may take in all, answer included (a total deadline).")
]
LoraOption = Annotated[
    Optional[str],
    typer.Option(
        "--lora", help="A GGUF LoRA adapter (from `dear-local convert-lora`) to apply to the model at run time.",
    ),
]
LoraScaleOption = Annotated[
    float, typer.Option("--lora-scale", min=-MAX_LORA_SCALE, max=MAX_LORA_SCALE, callback=finite, help="Strength of the --lora adapter: 1.0 as trained, 0 the base alone.")
]
ForceOption = Annotated[
    bool, typer.Option("--force", help="Replace what already exists (files, downloads); without it nothing is overwritten.")
]


def cpu_buffers_value(option: CpuBuffers | None) -> str | None:
    """The mode name to hand to the loader (None: the setting decides)."""
    return option.value if option is not None else None


def run_options(
    *, template: str | None, decoding: str | None, window: int | None, stride: int | None,
    n_threads: int | None, n_gpu_layers: int, n_ctx: int | None, cpu_buffers: CpuBuffers | None,
    servers: list[str] | None = None, protocol: Protocol = Protocol.auto, served_model: str | None = None,
    request_timeout: float = 120.0,
    lora: str | None = None, lora_scale: float = 1.0,
) -> RunOptions:
    """The :class:`RunOptions` that ``rerank`` and ``serve`` build from their shared options.

    Raises ``UserInputError`` for --n-ctx with --server (the server sets its own context).
    """
    if servers and n_ctx is not None:
        raise UserInputError(
            "--n-ctx has no effect with --server: each server sets its context when it starts "
            "(llama-server -c/--ctx-size divided by --parallel; vLLM --max-model-len); drop --n-ctx"
        )
    return RunOptions(
        template=template, decoding=decoding, window=window, stride=stride, n_threads=n_threads,
        n_gpu_layers=n_gpu_layers, n_ctx=n_ctx, cpu_buffers=cpu_buffers_value(cpu_buffers),
        servers=tuple(servers or ()), protocol=protocol.value, served_model=served_model,
        request_timeout=request_timeout,
        lora=lora, lora_scale=lora_scale,
    )


def run_options_for_servers(
    servers: list[str], protocol: Protocol, served_model: str | None, request_timeout: float
) -> RunOptions:
    """:class:`RunOptions` that run the model on ``servers`` (profile from the model's manifest)."""
    return RunOptions(servers=tuple(servers), protocol=protocol.value, served_model=served_model,
                      request_timeout=request_timeout)


@contextmanager
def flag_names():
    """Re-raise a profile's window/stride clash in the CLI's terms (--window, --stride)."""
    try:
        yield
    except StrideError as exc:
        if exc.stride_given and exc.window_given:
            msg = f"--stride {exc.stride} must be at most --window {exc.window}"
        elif exc.stride_given:
            msg = (f"--stride {exc.stride} must be at most --window (default {exc.window} from the model's profile); "
                   f"pass --window {exc.stride} or more")
        else:
            msg = (f"--stride (default {exc.stride} from the model's profile) must be at most --window {exc.window}; "
                   f"pass --stride {exc.window} or less")
        raise UserInputError(msg) from None
