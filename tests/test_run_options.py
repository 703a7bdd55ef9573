"""Run settings are declared once, in ``RunOptions``, and every surface follows that declaration.

- Each field is an option of ``rerank`` and ``serve`` (flags, help, default), a keyword argument of
  ``Reranker`` (default, a line of its docstring) and part of ``serve``'s settings.
- One function, ``open_backend``, opens every model; callers ask a runtime's capabilities, never its
  class (an AST scan of the sources).
- ``--flash-attn`` shows what adding a setting takes: its field, and this test.
"""

from __future__ import annotations

import ast
import inspect
from dataclasses import fields
from enum import Enum
from pathlib import Path

import pytest
import typer

from dear_local import Reranker
from dear_local.backends import factory
from dear_local.backends.base import Backend, Capabilities, Evaluator, ModelRuntime, Tokenizer, capabilities_of
from dear_local.cli import app
from dear_local.errors import UserInputError
from dear_local.run_options import FLAG, RunOptions, knobs
from dear_local import settings as dl_settings

ROOT = Path(__file__).resolve().parents[1]


def _command(name: str):
    return typer.main.get_command(app).commands[name]


def _param(command, name: str):
    found = [p for p in command.params if p.name == name]
    assert found, f"{command.name} has no option for {name}"
    return found[0]


# -- the CLI ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["rerank", "serve"])
@pytest.mark.parametrize("name, default, knob", knobs(), ids=[n for n, _d, _k in knobs()])
def test_every_run_option_is_an_option_of_the_command_as_declared(command, name, default, knob):
    param = _param(_command(command), knob.param or name)
    flags, _, negative = knob.flag.partition("/")
    assert flags in param.opts and set(knob.flags[1:]) <= set(param.opts)
    if negative:
        assert negative in param.secondary_opts
    assert param.help == knob.help
    shown = param.default.value if isinstance(param.default, Enum) else param.default
    assert shown == (None if default == () else default)
    if knob.env is not None:
        assert f"${knob.env}" in knob.help  # the help names the variable that supplies the default
    if knob.high is not None:
        assert param.max == knob.high and param.min == (knob.cli_low if knob.cli_low is not None else knob.low)


@pytest.mark.parametrize("command", ["rerank", "serve"])
def test_the_help_of_rerank_and_serve_lists_flash_attn(command, cli):
    code, out, _ = cli(command, "--help")
    assert code == 0 and "--flash-attn" in out and "--no-flash-attn" in out


# -- the Python API -----------------------------------------------------------------------------------


def test_every_run_option_is_a_keyword_of_reranker_with_its_default_and_a_docstring_line():
    params = inspect.signature(Reranker).parameters
    for name, default, knob in knobs():
        assert name in params and params[name].kind is inspect.Parameter.KEYWORD_ONLY, name
        assert params[name].default == default, name
        assert f"``{name}``" in Reranker.__doc__ and knob.doc in Reranker.__doc__, name
    assert list(RunOptions.names()) == [p for p in params if p in RunOptions.names()]
    assert RunOptions().as_kwargs().keys() == set(RunOptions.names())


def test_reranker_refuses_an_unknown_keyword_like_any_python_function():
    with pytest.raises(TypeError, match="unexpected keyword argument 'n_thread'"):
        Reranker("m.gguf", n_thread=2)


def test_reranker_checks_each_option_as_declared(fake_gguf):
    with pytest.raises(UserInputError, match="flash_attn must be None or a bool"):
        Reranker(str(fake_gguf), flash_attn="yes")
    with pytest.raises(UserInputError, match="n_threads must be None or an int between 1 and"):
        Reranker(str(fake_gguf), n_threads=0)
    with pytest.raises(UserInputError, match="request_timeout must be a number more than 0"):
        Reranker(str(fake_gguf), request_timeout=0)


# -- serve ----------------------------------------------------------------------------------------------


def test_serve_settings_hold_the_run_options_and_the_defaults_of_settings():
    from dear_local.server.config import ServerSettings

    s = ServerSettings(model="m.gguf")
    assert s.run == RunOptions()
    assert [f.type for f in fields(ServerSettings) if f.name == "run"] == ["RunOptions"]
    assert (s.host, s.port, s.max_queue, s.timeout, s.max_body_bytes) == (
        dl_settings.DEFAULT_HOST, dl_settings.DEFAULT_PORT, dl_settings.DEFAULT_MAX_QUEUE,
        dl_settings.DEFAULT_TIMEOUT, dl_settings.DEFAULT_MAX_BODY_BYTES,
    )
    serve = _command("serve")
    for name in ("host", "port", "max_queue", "timeout", "max_body_bytes", "max_documents"):
        assert _param(serve, name).default == getattr(s, name), name


# -- --flash-attn, end to end ----------------------------------------------------------------------------


class Loaded(Exception):
    """Raised by the recording Llama: the arguments arrived, nothing more to load."""


@pytest.fixture
def llama_calls(monkeypatch) -> list[dict]:
    """Every ``llama_cpp.Llama(...)`` call's keyword arguments; the call itself stops with :class:`Loaded`."""
    import llama_cpp

    calls: list[dict] = []

    def record(**kwargs):
        calls.append(kwargs)
        raise Loaded

    monkeypatch.setattr(llama_cpp, "Llama", record)
    return calls


@pytest.mark.parametrize("kwargs, env, expected", [
    ({}, None, True),  # on by default (settings.DEFAULT_FLASH_ATTN)
    ({"flash_attn": True}, "0", True),
    ({}, "0", None),
    ({}, "off", None),
    ({}, "1", True),
    ({"flash_attn": False}, None, None),
    ({"flash_attn": False}, "1", None),
])
def test_flash_attn_reaches_llama(kwargs, env, expected, llama_calls, llama3_vocab_gguf, monkeypatch):
    if env is not None:
        monkeypatch.setenv(dl_settings.ENV_FLASH_ATTN, env)
    with pytest.raises(Loaded):
        Reranker(str(llama3_vocab_gguf), **kwargs)
    (call,) = llama_calls
    assert call.get("flash_attn") is expected  # left out when off: llama-cpp-python's own default


@pytest.mark.parametrize("command", ["rerank", "serve"])
@pytest.mark.parametrize("flag, expected", [("--flash-attn", True), ("--no-flash-attn", False), (None, None)])
def test_flash_attn_flag_reaches_open_backend(command, flag, expected, cli, fake_gguf, monkeypatch):
    if command == "serve":
        pytest.importorskip("fastapi")
    seen = []

    def open_backend(model, options, settings=None, **kw):
        seen.append(options)
        raise UserInputError("stop here")

    monkeypatch.setattr(factory, "open_backend", open_backend)
    args = [command, "-m", str(fake_gguf), *([flag] if flag else [])]
    args += ["-q", "q"] if command == "rerank" else ["--port", "0"]
    code, _, err = cli(*args, stdin="a\nb\n")
    assert code != 0 and "stop here" in err
    assert [o.flash_attn for o in seen] == [expected]


# -- backends: one factory, capabilities, separate interfaces -----------------------------------------


def test_a_server_backend_is_a_runtime_without_evaluation_primitives():
    from dear_local.backends.llama import LlamaCppBackend
    from dear_local.remote import RemoteBackend

    assert issubclass(RemoteBackend, ModelRuntime) and issubclass(RemoteBackend, Tokenizer)
    assert not issubclass(RemoteBackend, Evaluator)
    assert not any(hasattr(RemoteBackend, name) for name in ("prefill", "extend", "rewind", "n_past"))
    assert issubclass(LlamaCppBackend, Backend) and issubclass(LlamaCppBackend, Evaluator)
    remote, local = RemoteBackend.capabilities, LlamaCppBackend.capabilities
    assert not remote.local_evaluation and remote.concurrent_queries and remote.request_errors
    assert "--max-model-len" in remote.context_advice
    assert local == Capabilities() and local.local_evaluation and not local.concurrent_queries


def test_a_backend_that_mixes_in_remote_model_still_gets_a_servers_capabilities():
    from dear_local.decoding.remote import RemoteModel
    from fake_backend import FakeBackend

    class Mixed(FakeBackend, RemoteModel):
        generate = pick = top = rebind = None

    assert not capabilities_of(Mixed()).local_evaluation
    assert capabilities_of(FakeBackend()).local_evaluation


def test_open_backend_is_the_one_place_a_model_is_opened(fake_gguf):
    from dear_local.server.config import ServerSettings

    r = Reranker(str(fake_gguf), n_ctx=1234, flash_attn=True)
    assert r.backend.n_ctx == 1234 and r.options.flash_attn is True
    assert ServerSettings(model=str(fake_gguf)).run == RunOptions()


BACKEND_CLASSES = {"RemoteModel", "RemoteBackend", "LlamaCppBackend"}


def _sources():
    for top in (ROOT / "dear_local", ROOT / "convert" / "dear_local_convert"):
        for path in sorted(top.rglob("*.py")):
            if (ROOT / "dear_local" / "backends") in path.parents:
                continue  # the backends package may look at classes: it defines them
            yield path


def _name(node) -> str:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""


def test_no_caller_asks_a_backend_for_its_class_or_probes_it_with_getattr():
    found = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or _name(node.func) not in ("isinstance", "issubclass", "getattr"):
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if _name(node.func) == "getattr":
                if node.args and "backend" in _name(node.args[0]).lower():
                    found.append(f"{where} getattr({ast.unparse(node.args[0])}, ...)")
                continue
            classes = node.args[1] if len(node.args) > 1 else None
            names = {_name(e) for e in (classes.elts if isinstance(classes, ast.Tuple) else [classes])}
            if names & BACKEND_CLASSES:
                found.append(f"{where} {ast.unparse(node)}")
    assert not found, "ask capabilities_of(backend) instead: " + "; ".join(found)


def test_settings_is_the_one_module_that_spells_environment_variables():
    import re

    found = []
    for path in _sources():
        if path.name == "settings.py" and path.parent.name == "dear_local":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("get", "getenv")
                    and node.args and isinstance(node.args[0], ast.Constant)
                    and re.fullmatch(r"DEAR_LOCAL_[A-Z_]+", str(node.args[0].value))):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)}")
    assert not found, "read it through dear_local.settings: " + "; ".join(found)


def test_every_flag_run_option_has_an_environment_variable_in_settings():
    for name, _default, knob in knobs():
        if knob.env is not None:
            assert knob.env in vars(dl_settings).values(), name
        if knob.kind == FLAG:
            assert knob.env is not None, name


def test_flash_attn_is_part_of_what_a_resumed_out_run_must_match(monkeypatch):
    from dear_local.cli.runtime import _flash_attn_key

    assert _flash_attn_key(RunOptions()) == {"flash_attn": True}  # on by default
    assert _flash_attn_key(RunOptions(flash_attn=False)) == {}  # off: journals written without it still resume
    assert _flash_attn_key(RunOptions(flash_attn=True, servers=("http://x:1",))) == {}  # the server's own setting
    monkeypatch.setenv(dl_settings.ENV_FLASH_ATTN, "0")
    assert _flash_attn_key(RunOptions()) == {}
    assert _flash_attn_key(RunOptions(flash_attn=True)) == {"flash_attn": True}


@pytest.mark.parametrize("value, expected", [
    *[(v, True) for v in ("1", "true", "YES", " on ")],
    *[(v, False) for v in ("0", "false", "No", "off ")],
    *[(v, dl_settings.DEFAULT_FLASH_ATTN) for v in ("", "maybe", "2")],
])
def test_the_flash_attention_setting_reads_on_off_and_falls_back_to_the_default(value, expected, monkeypatch):
    monkeypatch.setenv(dl_settings.ENV_FLASH_ATTN, value)
    assert dl_settings.get_settings().flash_attn is expected


def test_first_stage_and_listwise_settings_are_refused_where_they_would_do_nothing():
    """Depth and batch need a first stage; servers, LoRA and the profile need a listwise model."""
    from dear_local.errors import UserInputError
    from dear_local.run_options import RunOptions

    with pytest.raises(UserInputError, match=r"--listwise-depth only applies with a pointwise --first-stage"):
        RunOptions(listwise_depth=5).check_first_stage(True, cli=True)
    with pytest.raises(UserInputError, match=r"listwise_depth and first_stage_batch only apply with a pointwise first_stage"):
        RunOptions(listwise_depth=5, first_stage_batch=2).check_first_stage(True)
    for field, value in (("servers", ("http://h:1",)), ("lora", "a.gguf"), ("window", 5), ("stride", 2),
                         ("template", "card"), ("decoding", "greedy"), ("lora_scale", 0.5)):
        options = RunOptions(first_stage="p.gguf", **{field: value})
        with pytest.raises(UserInputError, match=rf"{field} only applies to a listwise model, and none was given"):
            options.check_first_stage(False)
        options.check_first_stage(True)  # with a listwise model they apply
    RunOptions(first_stage="p.gguf", listwise_depth=0, first_stage_batch=4).check_first_stage(False)
    RunOptions().check_first_stage(True)
