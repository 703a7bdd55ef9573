"""DeAR as a Haystack ranker component: ``DearLocalRanker(model)``, run as ``run(query, documents, top_k)``.

Needs ``pip install "dear-local[haystack]"`` (haystack-ai). Add it to a pipeline after a retriever
(``pipeline.add_component("ranker", DearLocalRanker("dear-8b-listwise", top_k=5))``); the pipeline
calls ``warm_up()``, which opens the model, and saves and loads it with ``to_dict``/``from_dict``.
"""

# No `from __future__ import annotations` here: Haystack reads run()'s annotations as types.

import asyncio
import dataclasses
import math
from typing import Any, Union

from ..errors import UserInputError, extra_import_error
from ..reranker import Reranker
from ._shared import SharedReranker, check_top

try:
    from haystack import Document, component, default_from_dict, default_to_dict
except ImportError as exc:
    raise extra_import_error(exc, "haystack-ai", "haystack", "haystack") from None


@component
class DearLocalRanker:
    """Ranks Haystack ``Document`` objects with DeAR, as Haystack's other rankers do.

    ``model`` is a model name or ``.gguf`` path, opened by :meth:`warm_up` with the run ``options``
    of :class:`dear_local.Reranker` (``decoding``, ``n_threads``, ``servers``...), or a ``Reranker``
    already open, which can be shared with other code. ``run`` returns ``top_k`` documents, best
    first, each a copy of its input with ``score`` set to dear-local's score in (0, 1].

    Serialized (``to_dict``, a pipeline's YAML) it is its model and options; one made from a
    ``Reranker`` is saved as that reranker's model name and run options (a ``profile`` object or
    ``backend`` given to the ``Reranker`` is not saved).
    """

    def __init__(self, model: Union[str, Reranker], *, top_k: int = 10, **options: Any) -> None:
        check_top("top_k", top_k, optional=False)
        if isinstance(model, Reranker):
            self._ranker = SharedReranker(model, options)
            self.model, self.options = model.model, self._ranker.options()
        elif isinstance(model, str):
            self._ranker = None
            self.model, self.options = model, options
        else:
            raise UserInputError(
                f"model must be a model name, a .gguf path or a dear_local.Reranker, got {type(model).__name__}"
            )
        self.top_k = top_k

    @property
    def reranker(self) -> Reranker:
        """The open reranker (opened here when it was not yet)."""
        self.warm_up()
        return self._ranker.reranker

    def warm_up(self) -> None:
        """Open the model, once; ``run`` calls this when the pipeline has not."""
        if self._ranker is None:
            self._ranker = SharedReranker(self.model, self.options)

    async def warm_up_async(self) -> None:
        """Open the model on a worker thread, once."""
        await asyncio.to_thread(self.warm_up)

    def close(self) -> None:
        """Free the model, if this component opened it; ``warm_up`` opens it again."""
        if self._ranker is not None and self._ranker.owned:
            self._ranker.close()
            self._ranker = None

    def to_dict(self) -> dict[str, Any]:
        return default_to_dict(self, model=self.model, top_k=self.top_k, **self.options)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DearLocalRanker":
        return default_from_dict(cls, data)

    @component.output_types(documents=list[Document])
    def run(self, query: str, documents: list[Document], top_k: Union[int, None] = None) -> dict[str, list[Document]]:
        """The best ``top_k`` (default: the component's) of ``documents`` for ``query``, best first.

        Documents with the same id are ranked once (the one with the higher score is kept), as in
        Haystack's own rankers; a document without text is ranked as empty text. The input documents
        are not changed. No documents give none.

        Raises:
            UserInputError (a ValueError): a ``top_k`` below 1, an empty query, or more documents
                than dear-local takes (1,000).
        """
        top_k = check_top("top_k", top_k) or self.top_k
        if not documents:
            return {"documents": []}
        self.warm_up()
        docs = _unique(documents)
        ranked = self._ranker.rerank(query, [doc.content or "" for doc in docs], top_k)
        return {"documents": [dataclasses.replace(docs[r.index], score=r.score) for r in ranked]}

    @component.output_types(documents=list[Document])
    async def run_async(
        self, query: str, documents: list[Document], top_k: Union[int, None] = None
    ) -> dict[str, list[Document]]:
        """:meth:`run` on a worker thread; calls on a local model wait for each other."""
        return await asyncio.to_thread(self.run, query, documents, top_k)


def _unique(documents: list[Document]) -> list[Document]:
    """One document per id, the one with the higher score, at the first one's place."""
    best: dict[str, Document] = {}
    for doc in documents:
        kept = best.get(doc.id)
        if kept is None or _score(doc) > _score(kept):
            best[doc.id] = doc
    return list(best.values())


def _score(doc: Document) -> float:
    return doc.score if doc.score is not None else -math.inf
