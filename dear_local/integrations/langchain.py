"""DeAR as a LangChain document compressor: ``DearLocalRerank(model).compress_documents(documents, query)``.

Needs ``pip install "dear-local[langchain]"`` (langchain-core). Use it where LangChain takes a
``BaseDocumentCompressor``, for example in ``ContextualCompressionRetriever(base_compressor=...,
base_retriever=...)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import extra_import_error
from ..reranker import Reranker
from ._shared import SharedReranker, check_top

try:
    from langchain_core.callbacks import Callbacks
    from langchain_core.documents import BaseDocumentCompressor, Document
    from pydantic import PrivateAttr
except ImportError as exc:
    raise extra_import_error(exc, "langchain-core", "langchain_core", "langchain") from None


class DearLocalRerank(BaseDocumentCompressor):
    """Reranks LangChain ``Document`` objects with DeAR, as LangChain's ``CohereRerank`` does with Cohere.

    ``model`` is a model name or ``.gguf`` path (opened here, with the run ``options`` of
    :class:`dear_local.Reranker`: ``decoding``, ``n_threads``, ``servers``...) or a ``Reranker``
    already open, which can be shared with other code. ``top_n`` documents come back (all when None),
    best first, each a copy of its input with ``metadata["relevance_score"]`` set to dear-local's
    score in (0, 1]. ``acompress_documents`` is LangChain's own: it runs this on a worker thread, and
    calls on a local model wait for each other.
    """

    model: str
    top_n: int | None = 3
    _ranker: SharedReranker = PrivateAttr()

    def __init__(self, model: str | Reranker, *, top_n: int | None = 3, **options: Any) -> None:
        check_top("top_n", top_n)
        ranker = SharedReranker(model, options)
        super().__init__(model=ranker.model, top_n=top_n)
        self._ranker = ranker

    @property
    def reranker(self) -> Reranker:
        return self._ranker.reranker

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """The best ``top_n`` of ``documents`` for ``query``, best first, scored in ``metadata["relevance_score"]``.

        The input documents are not changed. No documents give an empty list.

        Raises:
            UserInputError: an empty query, or more documents than dear-local takes (1,000).
        """
        docs = list(documents)
        ranked = self._ranker.rerank(query, [doc.page_content for doc in docs], self.top_n)
        return [
            docs[r.index].model_copy(update={"metadata": {**docs[r.index].metadata, "relevance_score": r.score}})
            for r in ranked
        ]

    def close(self) -> None:
        """Free the model, if this compressor opened it."""
        self._ranker.close()
