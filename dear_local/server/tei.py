"""The shapes of Hugging Face text-embeddings-inference (TEI): ``POST /rerank`` with ``texts``, and ``GET /info``.

Clients that speak TEI (Haystack's ``HuggingFaceTEIRanker``, LiteLLM's ``huggingface/`` provider,
Dify's and RAGFlow's TEI providers, LlamaIndex's TEI postprocessor) work unchanged against
``dear-local serve``:

- the request is ``{"query": str, "texts": [str, ...], "raw_scores": bool, "return_text": bool,
  "truncate": bool, "truncation_direction": "Left" | "Right"}`` (booleans may be ``"true"``/``"false"``);
- the answer is a bare JSON array ``[{"index": int, "score": float, "text"?: str}]``, best first
  (TEI sorts by score, and clients such as Dify's take the first ``top_n`` as they come).

What the model cannot honour is accepted and documented: scores are always in [0, 1] (there are
no logits to give for ``raw_scores``), and a document longer than the prompt template's passage
limit is always cut at its end, as the ranking contract cuts it, whatever ``truncate`` and
``truncation_direction`` say.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from .. import __version__
from ..reranker import RerankResponse
from .schemas import Flag, Query, Text
from .served import served

_DIRECTIONS = {"left": "Left", "right": "Right"}


def _direction(value):
    if isinstance(value, str) and value.strip().lower() in _DIRECTIONS:
        return _DIRECTIONS[value.strip().lower()]
    return value  # refused below, naming the choices


class TeiRerankRequest(BaseModel):
    """TEI: `texts` are strings; the answer is a bare array sorted by score."""

    model_config = ConfigDict(extra="ignore")

    query: Query
    texts: list[Text] = Field(
        ..., min_length=1, description="The documents to rank (at most the server's --max-documents)."
    )
    return_text: Flag = Field(False, description="Include each document's text in its result.")
    raw_scores: Flag = Field(False, description="Accepted; scores are always in [0, 1] (the model has no logits).")
    truncate: Flag | None = Field(
        None, description="Accepted; documents over the template's passage limit are always cut at their end."
    )
    truncation_direction: Annotated[Literal["Left", "Right"], BeforeValidator(_direction)] = Field(
        "Right", description="Accepted (`Left`, `Right`, any case); documents are always cut at their end."
    )


class TeiRank(BaseModel):
    index: int = Field(..., description="Position of the document in `texts`.")
    score: float = Field(..., ge=0.0, le=1.0, description="In [0, 1], decreasing with rank (see `relevance_score`).")
    text: str | None = Field(None, description="Present when `return_text` was true.")


def tei_ranks(resp: RerankResponse, return_text: bool) -> list[TeiRank]:
    """TEI's answer: one item per result, best first."""
    return [
        TeiRank(index=r.index, score=min(1.0, max(0.0, r.score)), text=r.text if return_text else None)
        for r in resp.results
    ]


class ClassifierLabels(BaseModel):
    id2label: dict[str, str] = {"0": "LABEL_0"}
    label2id: dict[str, int] = {"LABEL_0": 0}


class ModelType(BaseModel):
    reranker: ClassifierLabels = ClassifierLabels()


class TeiInfo(BaseModel):
    """TEI's ``GET /info``, with this server's limits, and dear-local's profile after TEI's fields."""

    model_id: str
    model_sha: str | None = None
    model_dtype: str = Field("gguf", description="The served file's format; its quantization is in its name.")
    served_model_name: str
    model_type: ModelType = Field(ModelType(), description='Always `{"reranker": ...}`.')
    max_concurrent_requests: int = Field(..., description="Requests ranked at once plus those that may wait.")
    max_input_length: int = Field(..., description="Tokens of one document that are ranked (the listwise template's "
                                  "cap; a pointwise ranker alone: of one query-document pair, which also bounds "
                                  "what a first stage reads below the listwise depth).")
    max_batch_tokens: int = Field(..., description="The listwise model's context in tokens (a pointwise ranker "
                                  "alone: the tokens of one of its calls).")
    max_batch_requests: int | None = None
    max_client_batch_size: int = Field(..., description="Documents per request (--max-documents).")
    auto_truncate: bool = Field(True, description="Documents over the passage limit are cut, never refused.")
    tokenization_workers: int = 1
    version: str = __version__
    sha: str | None = None
    docker_label: str | None = None
    template: str
    decoding: str
    window: int | None = Field(..., description="Passages per window; null without a listwise model.")
    stride: int | None = Field(..., description="Step between windows; null without a listwise model.")
    first_stage: str | None = Field(None, description="The pointwise first stage's template, if one runs.")
    listwise_depth: int | None = Field(None, description="How many of the first stage's best the listwise "
                                       "model reorders, when both run.")
    deadline: float | None = Field(None, description="The server's --deadline in seconds, if any.")
    timeout: float = Field(..., description="The server's --timeout in seconds.")


def tei_info(service) -> TeiInfo:
    """``GET /info`` for a :class:`~.service.RerankService`."""
    settings, s = service.settings, served(service.reranker)
    return TeiInfo(
        model_id=service.model_name,
        served_model_name=service.model_name,
        max_concurrent_requests=settings.in_flight + settings.max_queue,
        max_input_length=s.max_input_length,
        max_batch_tokens=s.max_batch_tokens,
        max_client_batch_size=settings.max_documents,
        template=s.template,
        decoding=s.decoding,
        window=s.window,
        stride=s.stride,
        first_stage=s.first_stage,
        listwise_depth=s.listwise_depth,
        deadline=settings.deadline,
        timeout=settings.timeout,
    )
