"""The one place that decides which runtime a model runs on: llama.cpp here, with or without a
LoRA adapter, or inference servers.

``Reranker``, ``dear-local rerank``, ``dear-local serve`` and the agreement check all open their
model through :func:`open_backend`; a test that wants a fake model patches this one function.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..run_options import RunOptions
from ..settings import Settings, get_settings
from .base import ModelRuntime


def open_backend(
    model: str | Path,
    options: RunOptions,
    settings: Settings | None = None,
    *,
    profile=None,
    verbose: bool = False,
    loader: Callable[..., ModelRuntime] | None = None,
) -> ModelRuntime:
    """Open ``model`` (a GGUF file; :func:`dear_local.store.resolve` turns a name into one) as ``options`` say.

    - ``options.servers``: the model runs on those inference servers
      (:func:`dear_local.remote.open_remote`); ``model`` only lends its tokenizer, and the key
      for the servers is ``settings.server_api_key``.
    - otherwise llama.cpp loads it here (:class:`~dear_local.backends.llama.LlamaCppBackend`),
      with ``options.lora`` applied at ``options.lora_scale`` when given. The context is
      ``options.n_ctx``, else what ``profile`` needs (:meth:`Profile.context_tokens`);
      ``cpu_buffers`` and ``flash_attn`` left at None take the settings' values.

    ``settings`` defaults to :func:`dear_local.settings.get_settings` (the environment).
    ``loader`` opens a GGUF file, the model's or the servers' tokenizer (default:
    ``LlamaCppBackend``); the tests' fake model comes in here.

    Raises:
        UserInputError: a combination that cannot work (``n_ctx`` or ``lora`` with servers).
        ModelNotFoundError, InvalidModelFileError: a missing or unloadable model or adapter.
        ServerError: a server that does not answer, or serves another tokenizer.
    """
    settings = settings or get_settings()
    options.check(cli=False)
    if options.servers:
        from ..remote import open_remote

        return open_remote(
            model, list(options.servers), protocol=options.protocol, served_model=options.served_model or "",
            timeout=options.request_timeout, retries=options.server_retries, api_key=settings.server_api_key,
            loader=loader,
        )
    if loader is None:
        from . import llama

        loader = llama.LlamaCppBackend
    if profile is None:
        from ..contract import Profile

        profile = Profile()
    return loader(
        model,
        n_ctx=options.n_ctx or profile.context_tokens(),
        n_threads=options.n_threads,
        n_gpu_layers=options.n_gpu_layers,
        cpu_buffers=options.cpu_buffers if options.cpu_buffers is not None else settings.cpu_buffers,
        flash_attn=options.flash_attn if options.flash_attn is not None else settings.flash_attn,
        verbose=verbose,
        lora=options.lora,
        lora_scale=options.lora_scale,
    )
