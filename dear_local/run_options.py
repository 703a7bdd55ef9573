"""How a model is loaded and run: profile overrides plus llama.cpp settings, declared once.

``Reranker``, ``dear-local rerank`` and ``dear-local serve`` (``ServerSettings.run``)
all take one :class:`RunOptions`, so a new knob is added in one place.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class RunOptions:
    """Overrides of the model's profile and llama.cpp load settings; None means "the default".

    - ``template``, ``decoding``, ``window``, ``stride``: single fields of the profile
      (see :class:`dear_local.contract.Profile`).
    - ``n_threads``: CPU threads (llama.cpp's choice when None); ``n_gpu_layers``: layers
      to offload, if llama.cpp was built with a GPU; ``n_ctx``: context size in tokens
      (sized from the profile when None).
    - ``cpu_buffers``: ``auto``, ``extra`` or ``plain`` (see :mod:`dear_local.backends.loader`).
    - ``servers``: inference server URLs; when given, the model runs there and the local
      model file only lends its tokenizer (see :mod:`dear_local.remote`). ``protocol``:
      ``auto``, ``llama-server`` or ``openai``; ``served_model``: the model name an
      OpenAI-protocol server expects; ``request_timeout``: seconds per request.
    - ``lora``: a GGUF LoRA adapter to apply to the model (``dear-local convert-lora``), at
      ``lora_scale`` times its trained strength (see :mod:`dear_local.backends.lora`).
    """

    template: str | None = None
    decoding: str | None = None
    window: int | None = None
    stride: int | None = None
    n_threads: int | None = None
    n_gpu_layers: int = 0
    n_ctx: int | None = None
    cpu_buffers: str | None = None
    servers: tuple[str, ...] = ()
    protocol: str = "auto"
    served_model: str | None = None
    request_timeout: float = 120.0
    lora: str | None = None
    lora_scale: float = 1.0

    def as_kwargs(self) -> dict:
        """The options as keyword arguments of ``Reranker``."""
        return asdict(self)
