"""DeAR as a LlamaIndex node postprocessor: ``DearLocalRerank(model)`` in ``node_postprocessors=[...]``.

Needs ``pip install "dear-local[llamaindex]"`` (llama-index-core). Use it where LlamaIndex takes a
``BaseNodePostprocessor``, for example ``index.as_query_engine(similarity_top_k=20,
node_postprocessors=[DearLocalRerank("dear-8b-listwise", top_n=5)])``.
"""

from __future__ import annotations

from typing import Any

from ..errors import extra_import_error
from ..reranker import Reranker
from ._shared import SharedReranker, check_top

try:
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
    from llama_index.core.callbacks import CBEventType, EventPayload
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
except ImportError as exc:
    raise extra_import_error(exc, "llama-index-core", "llama_index.core", "llamaindex") from None

dispatcher = get_dispatcher(__name__)


class DearLocalRerank(BaseNodePostprocessor):
    """Reranks LlamaIndex nodes with DeAR, as LlamaIndex's ``CohereRerank`` does with Cohere.

    ``model`` is a model name or ``.gguf`` path (opened here, with the run ``options`` of
    :class:`dear_local.Reranker`: ``decoding``, ``n_threads``, ``servers``...) or a ``Reranker``
    already open, which can be shared with other code. ``top_n`` nodes come back (all when None),
    best first, each a new ``NodeWithScore`` over the same node with ``score`` set to dear-local's
    score in (0, 1]. The text ranked is ``node.get_content(metadata_mode)``: with LlamaIndex's
    ``EMBED`` default, as its other rerankers, the metadata meant for embeddings comes first, and
    the card template keeps only a passage's first 300 characters; ``MetadataMode.NONE`` ranks the
    text alone. ``apostprocess_nodes`` is LlamaIndex's own: it runs this on a worker thread, and
    calls on a local model wait for each other.
    """

    model: str = Field(description="The dear-local model: a name from the model store or a .gguf path.")
    top_n: int | None = Field(default=2, description="Number of nodes to return, best first (None: all).")
    metadata_mode: MetadataMode = Field(default=MetadataMode.EMBED, description="The node text ranked.")
    _ranker: SharedReranker = PrivateAttr()

    def __init__(self, model: str | Reranker, *, top_n: int | None = 2,
                 metadata_mode: MetadataMode = MetadataMode.EMBED, **options: Any) -> None:
        check_top("top_n", top_n)
        ranker = SharedReranker(model, options)
        super().__init__(model=ranker.model, top_n=top_n, metadata_mode=metadata_mode)
        self._ranker = ranker

    @classmethod
    def class_name(cls) -> str:
        return "DearLocalRerank"

    @property
    def reranker(self) -> Reranker:
        return self._ranker.reranker

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        """The best ``top_n`` of ``nodes`` for the query, best first, with dear-local's scores.

        Raises:
            ValueError: no query (LlamaIndex's own message), an empty query, or more nodes than
                dear-local takes (1,000).
        """
        if query_bundle is None:
            raise ValueError("Missing query bundle in extra info.")
        top_n = self.top_n if self.top_n is not None else len(nodes)
        dispatcher.event(ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=top_n, model_name=self.model))
        if not nodes:
            return []
        payload = {EventPayload.NODES: nodes, EventPayload.MODEL_NAME: self.model,
                   EventPayload.QUERY_STR: query_bundle.query_str, EventPayload.TOP_K: top_n}
        with self.callback_manager.event(CBEventType.RERANKING, payload=payload) as event:
            texts = [n.node.get_content(metadata_mode=self.metadata_mode) for n in nodes]
            ranked = self._ranker.rerank(query_bundle.query_str, texts, self.top_n)
            new_nodes = [NodeWithScore(node=nodes[r.index].node, score=r.score) for r in ranked]
            event.on_end(payload={EventPayload.NODES: new_nodes})
        dispatcher.event(ReRankEndEvent(nodes=new_nodes))
        return new_nodes

    def close(self) -> None:
        """Free the model, if this postprocessor opened it."""
        self._ranker.close()
