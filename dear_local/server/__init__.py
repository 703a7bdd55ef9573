"""``dear-local serve``: a rerank API over a local model in the Cohere, Jina, Infinity and TEI shapes.

Importing this package needs the ``serve`` extra (FastAPI, uvicorn).
"""

from .app import create_app
from .config import ServerSettings, bind_warning, is_loopback

__all__ = ["ServerSettings", "bind_warning", "create_app", "is_loopback"]
