"""What the framework adapters share: the reranker they call, opened once, queried one at a time."""

from __future__ import annotations

import contextlib
import threading
from pathlib import PurePath
from typing import Any

from ..api_args import check_int
from ..backends.base import capabilities_of
from ..errors import UserInputError
from ..reranker import Reranker, RerankResult
from ..run_options import RunOptions


class SharedReranker:
    """A :class:`Reranker` opened from ``model`` and ``options``, or the one passed as ``model``.

    A local model ranks one query at a time: calls from several threads (the frameworks' async
    methods run the sync ones on worker threads) wait for each other here. A reranker on
    inference servers takes several queries at once, so they are not serialized.
    """

    def __init__(self, model: str | Reranker, options: dict[str, Any]) -> None:
        if isinstance(model, Reranker):
            if options:
                raise UserInputError(
                    f"run options ({', '.join(sorted(options))}) go to Reranker(...) itself, not beside a Reranker"
                )
            self.reranker, self.owned = model, False
        elif isinstance(model, str):
            self.reranker, self.owned = Reranker(model, **options), True
        else:
            raise UserInputError(
                f"model must be a model name, a .gguf path or a dear_local.Reranker, got {type(model).__name__}"
            )
        concurrent = capabilities_of(self.reranker.backend).concurrent_queries
        self._lock = contextlib.nullcontext() if concurrent else threading.Lock()

    @property
    def model(self) -> str:
        return self.reranker.model

    def options(self) -> dict[str, Any]:
        """The run options that differ from the defaults (what re-opens this reranker by name)."""
        defaults = RunOptions().as_kwargs()
        plain = {tuple: list, PurePath: str}
        return {k: next((f(v) for t, f in plain.items() if isinstance(v, t)), v)
                for k, v in self.reranker.options.as_kwargs().items() if v != defaults[k]}

    def rerank(self, query: str, texts: list[str], top_n: int | None) -> list[RerankResult]:
        """The best ``top_n`` (all when None) of ``texts`` for ``query``, best first; none for no texts."""
        if not texts:
            return []
        with self._lock:
            return self.reranker.rerank(query, texts, top_n=top_n).results

    def close(self) -> None:
        """Free the model if this object opened it; a Reranker passed in stays open for its owner."""
        if self.owned:
            self.reranker.close()


def check_top(name: str, value: Any, *, optional: bool = True) -> int | None:
    """``top_n``/``top_k``: None (all) or an int of at least 1."""
    return check_int(name, value, 1, optional=optional)
