"""Running the model on inference servers (llama-server, vLLM, SGLang): protocols, fleet, backend.

The ranking contract stays dear-local's: prompts are built and tokenized here and sent as token
ids; decoding is :mod:`dear_local.decoding.remote`. See :func:`open_remote`.
"""

from .backend import RemoteBackend, open_remote
from .fleet import Fleet

__all__ = ["Fleet", "RemoteBackend", "open_remote"]
