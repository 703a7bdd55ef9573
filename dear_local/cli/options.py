"""Options shared by several commands, declared once as typer ``Annotated`` aliases.

The run options (profile overrides, llama.cpp and server settings) are not declared here: each is
a field of :class:`dear_local.run_options.RunOptions`, and :func:`with_run_options` turns every
field into an option of a command. The ``*Option`` aliases below are derived from the same
declaration, for commands that take only some of them (``check``, ``reference``).
"""

from __future__ import annotations

import functools
import inspect
import math
from contextlib import contextmanager
from enum import Enum
from typing import Annotated, Any, Callable, Optional

import typer

from ..contract.profile import StrideError
from ..errors import UserInputError
from ..limits import MAX_GPU_LAYERS  # noqa: F401 - kept importable from here
from ..run_options import (
    CHOICE,
    FLAG,
    INT,
    PATH,
    PROFILE,
    REAL,
    TEXT,
    URLS,
    Knob,
    RunOptions,
    knobs,
)


def finite(value: float | None) -> float | None:
    """A typer callback: refuse ``nan`` (click's FloatRange lets it through; ``inf`` fails its max)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def _choices(name: str, choices: tuple[str, ...], doc: str) -> type[Enum]:
    enum = Enum(name, {c.replace("-", "_"): c for c in choices}, type=str, module=__name__)
    enum.__doc__ = doc
    return enum


_KNOBS = {name: (default, k) for name, default, k in knobs()}

CpuBuffers = _choices("CpuBuffers", _KNOBS["cpu_buffers"][1].choices,
                      "llama.cpp's CPU weight buffers; see ``dear_local.backends.loader``.")
Protocol = _choices("Protocol", _KNOBS["protocol"][1].choices,
                    "How to talk to --server; see ``dear_local.remote.protocols``.")
_ENUMS = {"cpu_buffers": CpuBuffers, "protocol": Protocol}


def _cli_type(name: str, default: Any, k: Knob) -> Any:
    if k.kind == CHOICE:
        base = _ENUMS[name]
    elif k.kind in (INT,) or (k.kind == PROFILE and k.high is not None):
        base = int
    elif k.kind == REAL:
        base = float
    elif k.kind == URLS:
        base = list[str]
    elif k.kind == FLAG:
        base = bool
    elif k.kind in (TEXT, PATH, PROFILE):
        base = str
    else:  # pragma: no cover - a kind without a CLI type
        raise TypeError(f"run option {name}: no CLI type for kind {k.kind!r}")
    return Optional[base] if default is None or k.kind == URLS else base


def run_option(name: str) -> Any:
    """The typer ``Annotated`` type of the run option ``name``, as :class:`RunOptions` declares it."""
    default, k = _KNOBS[name]
    extra: dict[str, Any] = {}
    if k.kind == REAL:
        extra["callback"] = finite
    low = k.cli_low if k.cli_low is not None else k.low
    if k.kind in (INT, REAL, PROFILE) and k.high is not None:
        extra.update(min=low, max=k.high)
    if k.env is not None or k.kind in (URLS, FLAG):
        extra["show_default"] = False  # the default is the environment's, or nothing
    return Annotated[_cli_type(name, default, k), typer.Option(*k.flags, help=k.help, **extra)]


def cli_default(name: str) -> Any:
    """The CLI parameter's default for the run option ``name`` (an enum member for a choice)."""
    default, k = _KNOBS[name]
    if k.kind == URLS:
        return None
    if k.kind == CHOICE and default is not None:
        return _ENUMS[name](default)
    return default


TemplateOption = run_option("template")
DecodingOption = run_option("decoding")
WindowOption = run_option("window")
StrideOption = run_option("stride")
ThreadsOption = run_option("n_threads")
GpuLayersOption = run_option("n_gpu_layers")
NCtxOption = run_option("n_ctx")
CpuBuffersOption = run_option("cpu_buffers")
FlashAttnOption = run_option("flash_attn")
ServerOption = run_option("servers")
ProtocolOption = run_option("protocol")
ServedModelOption = run_option("served_model")
RequestTimeoutOption = run_option("request_timeout")
LoraOption = run_option("lora")
LoraScaleOption = run_option("lora_scale")

ModelOption = Annotated[
    str, typer.Option("--model", "-m", help="A .gguf file, or NAME[:QUANT] from `dear-local models`.")
]
ListwiseModelOption = Annotated[
    Optional[str],
    typer.Option("--model", "-m", help="The listwise model: a .gguf file, or NAME[:QUANT] from `dear-local models` "
                 "(may be left out with --first-stage, for a pointwise ranking)."),
]


def check_model_given(model: str | None, options: RunOptions) -> None:
    """``--model`` is needed unless a pointwise ``--first-stage`` ranks alone: a usage error (exit 2) otherwise.

    Then first-stage options without ``--first-stage``, and listwise ones without ``--model``, are refused
    (:meth:`RunOptions.check_first_stage`)."""
    if model is None and options.first_stage is None:
        from typer import core

        click = getattr(core, "_click", None)  # typer 0.29 carries its own copy of click
        if click is None:  # pragma: no cover - typer < 0.29
            import click
        ctx = click.globals.get_current_context(silent=True)
        raise click.exceptions.UsageError(
            "Missing option '--model' (or --first-stage, to rank with a pointwise model alone)", ctx=ctx
        )
    options.check_first_stage(model is not None, cli=True)
ForceOption = Annotated[
    bool, typer.Option("--force", help="Replace what already exists (files, downloads); without it nothing is overwritten.")
]


def cpu_buffers_value(option: CpuBuffers | None) -> str | None:
    """The mode name to hand to the loader (None: the setting decides)."""
    return option.value if option is not None else None


def run_options(**values: Any) -> RunOptions:
    """The :class:`RunOptions` of a command's run options, as typer passed them (enums, a list of servers).

    Raises ``UserInputError`` for --n-ctx with --server (the server sets its own context).
    """
    converted = {}
    for name, value in values.items():
        if isinstance(value, Enum):
            value = value.value
        elif name == "servers":
            value = tuple(value or ())
        converted[name] = value
    options = RunOptions(**converted)
    options.check_context(cli=True)
    options.check_flash_attn(cli=True)
    if not options.servers:  # a local model: a bad DEAR_LOCAL_CPU_VARIANT is said before any input is read
        from ..backends.cpu_variant import check_variant_setting

        check_variant_setting()
    return options


def run_options_for_servers(
    servers: list[str], protocol: Protocol, served_model: str | None, request_timeout: float
) -> RunOptions:
    """:class:`RunOptions` that run the model on ``servers`` (profile from the model's manifest)."""
    return run_options(servers=servers, protocol=protocol, served_model=served_model, request_timeout=request_timeout)


def with_run_options(command: Callable) -> Callable:
    """Give the typer ``command`` one option per :class:`RunOptions` field.

    ``command`` takes a parameter ``options: RunOptions`` in place of them; the options are added
    after its own, with the flags, help, bounds and defaults the declaration gives, and arrive
    checked as one :class:`RunOptions` (:func:`run_options`).
    """
    sig = inspect.signature(command, eval_str=True)
    if "options" not in sig.parameters:
        raise TypeError(f"{command.__name__} must take an `options` parameter to get the run options")
    own = [p for p in sig.parameters.values() if p.name != "options"]
    params = {name: k.param or name for name, _d, k in knobs()}
    added = [
        inspect.Parameter(param, inspect.Parameter.KEYWORD_ONLY, default=cli_default(name), annotation=run_option(name))
        for name, param in params.items()
    ]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        options = run_options(**{name: kwargs.pop(param) for name, param in params.items()})
        return command(options=options, **kwargs)

    del wrapper.__wrapped__  # typer reads the signature below, not the command's
    wrapper.__signature__ = sig.replace(parameters=own + added)
    wrapper.__annotations__ = {p.name: p.annotation for p in own + added}
    return wrapper


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
