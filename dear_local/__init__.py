"""dear-local: the DeAR listwise reranker, run locally through llama.cpp."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dear-local")
except PackageNotFoundError:  # running from a checkout without installing
    __version__ = "0.0.0+local"

from .contract import Profile  # noqa: E402
from .errors import DearLocalError  # noqa: E402
from .reranker import Reranker, RerankResponse, RerankResult  # noqa: E402

__all__ = ["DearLocalError", "Profile", "Reranker", "RerankResponse", "RerankResult", "__version__"]
