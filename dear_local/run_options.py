"""How a model is loaded and run: profile overrides plus llama.cpp and server settings, declared once.

Every knob is one field of :class:`RunOptions`, and its :class:`Knob` says everything else about
it: the command-line flag and help, the line of ``Reranker``'s docstring, the bounds, the
choices and the environment variable that supplies its default. From that one declaration:

- ``dear-local rerank`` and ``serve`` get their options (:func:`dear_local.cli.options.with_run_options`);
- ``Reranker(...)`` gets its keyword arguments, their checks and its docstring
  (:mod:`dear_local.reranker`);
- ``serve``'s settings hold one :class:`RunOptions` (``ServerSettings.run``);
- :func:`dear_local.backends.factory.open_backend` opens the model the options describe.

So a new knob is a new field here, the place that uses it, and its test; ``tests/test_run_options.py``
fails when a surface drifts from this declaration.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from . import settings as _s
from .backends.loader import CPU_BUFFER_MODES
from .contract.profile import DECODING_MODES, MAX_WINDOW
from .errors import UserInputError
from .limits import (
    MAX_CTX, MAX_DOCUMENTS, MAX_GPU_LAYERS, MAX_LORA_SCALE, MAX_POINTWISE_BATCH, MAX_REQUEST_TIMEOUT, MAX_SERVER_RETRIES,
    MAX_THREADS,
)

PROTOCOLS = ("auto", "llama-server", "openai")  # how to talk to servers; see dear_local.remote.protocols

# What a knob's value is, for the CLI's type and the Python API's check.
PROFILE, INT, REAL, CHOICE, TEXT, URLS, PATH, FLAG = "profile", "int", "real", "choice", "text", "urls", "path", "flag"


@dataclass(frozen=True)
class Knob:
    """Everything about one run option but its name and default (the dataclass field's).

    - ``kind``: ``profile`` (a profile field, checked by :class:`~dear_local.contract.Profile`),
      ``int``, ``real``, ``choice``, ``text``, ``urls`` (server URLs), ``path`` or ``flag`` (a bool).
    - ``flags``: the command-line flag and its aliases; ``param``: the CLI's parameter name when it
      is not the field's (``--server`` collects ``servers``).
    - ``help``: the ``--help`` text; ``doc``: the line in ``Reranker``'s docstring.
    - ``low``/``high``: bounds (``low_open``: ``low`` itself is out); ``cli_low``: a stricter
      lower bound for the flag; ``choices``: the valid values.
    - ``env``: the environment variable that supplies the value when it is left at None
      (read by :mod:`dear_local.settings`).
    """

    kind: str
    flags: tuple[str, ...]
    help: str
    doc: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    cli_low: float | None = None
    choices: tuple[str, ...] = ()
    env: str | None = None
    param: str | None = None

    @property
    def flag(self) -> str:
        return self.flags[0]


def knob(default: Any, **kw) -> Any:
    return field(default=default, metadata={"knob": Knob(**kw)})


@dataclass(frozen=True)
class RunOptions:
    """Overrides of the model's profile, llama.cpp load settings and server settings; None means "the default".

    The fields and what each one does are declared below, once; see :func:`knobs`.
    """

    # -- the profile ---------------------------------------------------------------------------------
    template: str | None = knob(
        None, kind=PROFILE, flags=("--template", "--profile"),
        help="Prompt template (see `dear-local templates`); default: the model's (check: the reference's, "
        "which it must match).",
        doc="the prompt template (see ``dear-local templates``); default: the model's profile's",
    )
    decoding: str | None = knob(
        None, kind=PROFILE, flags=("--decoding",), choices=DECODING_MODES,
        help=f"One of: {', '.join(DECODING_MODES)}; default: the model's.",
        doc=f"the decoding mode, one of {', '.join(DECODING_MODES)}; default: the model's profile's",
    )
    window: int | None = knob(
        None, kind=PROFILE, flags=("--window",), low=1, high=MAX_WINDOW,
        help="Passages per window (default: the model's profile, 20).",
        doc="passages per window (default: the model's profile's, 20)",
    )
    stride: int | None = knob(
        None, kind=PROFILE, flags=("--stride",), low=1, high=MAX_WINDOW,
        help="Window stride, at most --window (default: the model's profile, 10).",
        doc="the window stride, at most ``window`` (default: the model's profile's, 10)",
    )
    # -- llama.cpp --------------------------------------------------------------------------------------
    n_threads: int | None = knob(
        None, kind=INT, flags=("--threads",), low=1, high=MAX_THREADS,
        help="CPU threads (default: llama.cpp's choice).",
        doc="CPU threads (default: llama.cpp's choice)",
    )
    n_gpu_layers: int = knob(
        _s.DEFAULT_N_GPU_LAYERS, kind=INT, flags=("--gpu-layers",), low=-1, high=MAX_GPU_LAYERS,
        help="Layers to offload to a GPU, if llama.cpp was built with one (-1: all).",
        doc="layers to offload to a GPU, if llama.cpp was built with one (-1: all)",
    )
    n_ctx: int | None = knob(
        None, kind=INT, flags=("--n-ctx",), low=1, high=MAX_CTX,
        help="Context size in tokens (default: sized from the profile).",
        doc="context size in tokens (default: sized from the profile); not with ``servers``",
    )
    cpu_buffers: str | None = knob(
        None, kind=CHOICE, flags=("--cpu-buffers",), choices=CPU_BUFFER_MODES, env=_s.ENV_CPU_BUFFERS,
        help="llama.cpp weight buffers: auto (plain on AMX builds, else extra), extra or plain. "
        f"Default: ${_s.ENV_CPU_BUFFERS}, else {_s.DEFAULT_CPU_BUFFERS}; see `dear-local env`.",
        doc=f"llama.cpp's CPU weight buffers, ``auto``/``extra``/``plain`` (see ``dear_local.backends.loader``); "
        f"default: ``{_s.ENV_CPU_BUFFERS}``, else ``{_s.DEFAULT_CPU_BUFFERS}``",
    )
    flash_attn: bool | None = knob(
        None, kind=FLAG, flags=("--flash-attn/--no-flash-attn",), env=_s.ENV_FLASH_ATTN,
        help=f"llama.cpp's flash attention (default: ${_s.ENV_FLASH_ATTN}, else on; faster prompts on CPUs).",
        doc=f"llama.cpp's flash attention; default: ``{_s.ENV_FLASH_ATTN}``, else on",
    )
    # -- inference servers --------------------------------------------------------------------------------
    servers: tuple[str, ...] = knob(
        (), kind=URLS, flags=("--server",), param="server",
        help="Run the model on this inference server (llama-server, vLLM, SGLang), e.g. http://127.0.0.1:8080; "
        "repeat for a fleet. --model then only lends its tokenizer (any quant of the served model). "
        f"A key for the servers comes from ${_s.ENV_SERVER_API_KEY}.",
        doc="URLs of inference servers (llama-server, vLLM, SGLang) to run the model on; ``model`` then only "
        f"lends its tokenizer, and a key for the servers comes from ``{_s.ENV_SERVER_API_KEY}``",
    )
    protocol: str = knob(
        _s.DEFAULT_PROTOCOL, kind=CHOICE, flags=("--protocol",), choices=PROTOCOLS,
        help="Server protocol: auto (llama-server's /props, else openai), llama-server or "
        "openai (vLLM/SGLang /v1/completions).",
        doc="how to talk to the servers: ``auto``, ``llama-server`` or ``openai`` (vLLM/SGLang)",
    )
    served_model: str | None = knob(
        None, kind=TEXT, flags=("--served-model",),
        help="Model name an openai-protocol server expects (default: the first it lists).",
        doc="the model name an OpenAI-protocol server expects (default: the first it lists)",
    )
    request_timeout: float = knob(
        _s.DEFAULT_REQUEST_TIMEOUT, kind=REAL, flags=("--request-timeout",), low=0.0, low_open=True, cli_low=1.0,
        high=MAX_REQUEST_TIMEOUT,
        help="Seconds one server request may take in all, answer included (a total deadline).",
        doc="seconds one server request may take in all",
    )
    server_retries: int = knob(
        _s.DEFAULT_SERVER_RETRIES, kind=INT, flags=("--server-retries",), low=0, high=MAX_SERVER_RETRIES,
        help="Attempts after the first on one server that failed or did not answer, waiting 0.5 s before "
        "the first and twice as long each time, before its work moves to another server (0: none).",
        doc="attempts after the first on one server that failed, 0.5 s apart and doubling, before its work "
        "moves to another server",
    )
    # -- LoRA ------------------------------------------------------------------------------------------
    lora: str | None = knob(
        None, kind=PATH, flags=("--lora",),
        help="A GGUF LoRA adapter (from `dear-local convert-lora`) to apply to the model at run time.",
        doc="a GGUF LoRA adapter (``dear-local convert-lora``) applied to the model at run time, so one base "
        "GGUF serves several adapters; not with ``servers``",
    )
    lora_scale: float = knob(
        _s.DEFAULT_LORA_SCALE, kind=REAL, flags=("--lora-scale",), low=-MAX_LORA_SCALE, high=MAX_LORA_SCALE,
        help="Strength of the --lora adapter: 1.0 as trained, 0 the base alone.",
        doc="strength of the ``lora`` adapter: 1.0 as trained, 0 the base alone",
    )

    # -- the pointwise first stage (DeAR-P) ---------------------------------------------------------
    first_stage: str | None = knob(
        None, kind=PATH, flags=("--first-stage",),
        help="A pointwise ranker (DeAR-P GGUF, or NAME[:QUANT]) that scores every candidate first; the listwise "
        "--model then reorders only its top --listwise-depth. Alone (no --model), a fast pointwise reranker. "
        "Scores become its probabilities (the logistic of its logit, not fitted to your data), the same for a "
        "document in any request.",
        doc="a pointwise ranker (DeAR-P GGUF, or ``NAME[:QUANT]``) that scores every document first; the listwise "
        "model then reorders only its top ``listwise_depth``, and ``model`` may be None for a pointwise ranking",
    )
    listwise_depth: int = knob(
        _s.DEFAULT_LISTWISE_DEPTH, kind=INT, flags=("--listwise-depth",), low=0, high=MAX_DOCUMENTS,
        help="With --first-stage: how many of its best documents the listwise model reorders (DeAR: 30, two "
        "windows); 0 for the pointwise order alone.",
        doc="with ``first_stage``: how many of its best documents the listwise model reorders (0: none)",
    )
    first_stage_batch: int = knob(
        _s.DEFAULT_FIRST_STAGE_BATCH, kind=INT, flags=("--first-stage-batch",), low=1, high=MAX_POINTWISE_BATCH,
        help="With --first-stage: documents scored per llama.cpp call.",
        doc="with ``first_stage``: documents scored per llama.cpp call",
    )

    def __post_init__(self) -> None:
        if isinstance(self.servers, list):
            object.__setattr__(self, "servers", tuple(self.servers))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def as_kwargs(self) -> dict:
        """The options as keyword arguments of ``Reranker``."""
        return asdict(self)

    def check(self, *, cli: bool = False) -> None:
        """Refuse combinations that cannot work, in the CLI's terms (flags) or the API's (arguments).

        Raises:
            UserInputError: ``n_ctx``, ``lora`` or ``flash_attn=True`` with ``servers`` (a server
                sets its own context and attention kernels when it starts, and loads its own adapters).
        """
        self.check_context(cli=cli)
        self.check_lora()
        self.check_flash_attn(cli=cli)

    def check_first_stage(self, model_given: bool, *, cli: bool = False) -> None:
        """Refuse first-stage settings without a first stage, and listwise settings without a listwise model.

        Raises:
            UserInputError: ``listwise_depth`` or ``first_stage_batch`` changed without ``first_stage``;
                with ``first_stage`` but no listwise model: ``servers``, ``lora``, ``lora_scale`` or a
                profile setting (``template``, ``decoding``, ``window``, ``stride``), which only the
                listwise model uses.
        """
        def name(field: str) -> str:
            return self.flag(field) if cli else field

        if self.first_stage is None:
            changed = [f for f in ("listwise_depth", "first_stage_batch") if getattr(self, f) != _DEFAULTS[f]]
            if changed:
                verb = "apply" if len(changed) > 1 else "applies"
                raise UserInputError(f"{' and '.join(map(name, changed))} only {verb} with a pointwise "
                                     f"{name('first_stage')}; add one or drop {' and '.join(map(name, changed))}")
            return
        if model_given:
            return
        listwise_only = [f for f in ("servers", "lora", "template", "decoding", "window", "stride")
                         if getattr(self, f) not in (None, ())]
        if self.lora_scale != _DEFAULTS["lora_scale"]:
            listwise_only.append("lora_scale")
        if listwise_only:
            what = " and ".join(map(name, listwise_only))
            verb = "apply" if len(listwise_only) > 1 else "applies"
            raise UserInputError(f"{what} only {verb} to a listwise model, and none was given (the pointwise "
                                 f"{name('first_stage')} ranks alone); add {'--model' if cli else 'a model'} or drop {what}")

    @classmethod
    def flag(cls, field: str) -> str:
        """The CLI flag of option ``field`` (``--first-stage`` for ``first_stage``)."""
        flags = _FLAGS.get(field)
        return flags[0] if flags else "--" + field.replace("_", "-")

    def check_flash_attn(self, *, cli: bool = False) -> None:
        """Refuse ``flash_attn=True`` with ``servers``: flash attention is chosen where a server starts."""
        if self.servers and self.flash_attn:
            name = "--flash-attn" if cli else "flash_attn=True"
            raise UserInputError(
                f"{name} has no effect with {'--server' if cli else 'servers'}: each server chooses its attention kernels "
                f"when it starts (llama-server --flash-attn on; vLLM picks its own); drop {name}"
            )

    def check_context(self, *, cli: bool = False) -> None:
        """Refuse ``n_ctx`` with ``servers``: each server sets its own context."""
        if self.servers and self.n_ctx is not None:
            if cli:
                raise UserInputError(
                    "--n-ctx has no effect with --server: each server sets its context when it starts "
                    "(llama-server -c/--ctx-size divided by --parallel; vLLM --max-model-len); drop --n-ctx"
                )
            raise UserInputError(
                "n_ctx has no effect with servers: each server sets its own context when it starts "
                "(llama-server -c/--ctx-size divided by --parallel; vLLM --max-model-len); drop n_ctx"
            )

    def check_lora(self) -> None:
        """Refuse ``lora`` with ``servers``: a server loads its own adapters."""
        if self.servers and self.lora is not None:
            raise UserInputError(
                "--lora applies an adapter to a local model; with --server, load the adapter on the server "
                "(llama-server --lora ADAPTER.gguf, vLLM --enable-lora) and drop --lora here"
            )


def knobs() -> list[tuple[str, Any, Knob]]:
    """``(name, default, knob)`` of every run option, in declaration order."""
    return [(f.name, f.default, f.metadata["knob"]) for f in fields(RunOptions)]


def check_values(**options: Any) -> None:
    """Check Python API values of run options for type and range (the profile fields are left to
    :class:`~dear_local.contract.Profile`); messages name the argument.

    Raises:
        UserInputError: the first value of the wrong type or out of range.
    """
    from .api_args import check_choice, check_int, check_real, check_str, check_str_list

    for name, _default, k in knobs():
        if name not in options:
            continue
        value = options[name]
        optional = _default is None
        if k.kind == INT:
            check_int(name, value, int(k.low), int(k.high), optional=optional)
        elif k.kind == REAL:
            check_real(name, value, k.low, k.high, lo_open=k.low_open)
        elif k.kind == CHOICE:
            check_choice(name, value, k.choices, optional=optional)
        elif k.kind == TEXT:
            check_str(name, value, optional=optional)
        elif k.kind == URLS:
            check_str_list(name, value)
        elif k.kind == PATH:
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise UserInputError(
                    f"{name} must be None or a path (str or os.PathLike), got {_type_name(value)}"
                )
        elif k.kind == FLAG:
            if value is not None and not isinstance(value, bool):
                raise UserInputError(f"{name} must be None or a bool, got {_type_name(value)}")


def _type_name(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def options_doc(indent: str = "    ") -> str:
    """The run options as docstring lines, one per option (for ``Reranker``)."""
    return "\n".join(
        f"{indent}- ``{name}``{'' if default in (None, ()) else f' (default ``{default!r}``)'}: {k.doc}."
        for name, default, k in knobs()
    )


_DEFAULTS = {f.name: f.default for f in fields(RunOptions)}
_FLAGS = {f.name: f.metadata["knob"].flags for f in fields(RunOptions)}
