"""The answer of Infinity's ``POST /rerank`` (michaelfeil/infinity), which bare ``/rerank`` gives to ``documents`` bodies.

``{"object": "rerank", "results": [{"relevance_score", "index", "document"?}], "model", "usage": {"prompt_tokens",
"total_tokens"}, "id", "created", "meta"}``: Cohere's results with Jina's ``usage``, so the Infinity client,
Dify's OpenAI-compatible provider and RAGFlow's (which read ``results[].index`` and
``results[].relevance_score``) all read it. As in Infinity, ``document`` is the document's text as a
string, present when ``return_documents`` is true, and ``model`` echoes the request's (the served model's
name when it sent none). ``meta`` is dear-local's, as on ``/v1/rerank``.
"""

from __future__ import annotations

import time
import uuid
from typing import Literal

from pydantic import BaseModel, Field

from .schemas import SCORE_DOC, Meta, Usage


class InfinityResult(BaseModel):
    relevance_score: float = Field(..., ge=0.0, le=1.0, description=SCORE_DOC)
    index: int = Field(..., description="Position of the document in the request.")
    document: str | None = Field(None, description="The document's text, when `return_documents` was true.")
    truncated: bool = Field(
        False, description="The document was longer than the profile's passage limit and was cut before ranking."
    )


class InfinityResponse(BaseModel):
    object: Literal["rerank"] = "rerank"
    results: list[InfinityResult] = Field(..., description="Best first.")
    model: str = Field(..., description="The request's `model`, or the served model's name when it sent none.")
    usage: Usage
    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    created: int = Field(default_factory=lambda: int(time.time()), description="Unix time, in seconds.")
    meta: Meta
