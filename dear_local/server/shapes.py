"""Which request shape a body is, for the paths that take more than one (``/rerank``, ``/v1/rerank``).

A body with ``texts`` and no ``documents`` (absent or null) is TEI's (:class:`.tei.TeiRerankRequest`); any other
body is the ``documents`` shape of Cohere v1, Jina and Infinity (:class:`.schemas.RerankRequestV1`),
so a body with neither is told that it lacks ``documents``. The OpenAPI schema shows the two as
``oneOf``. Validation errors carry the shape's tag in their location; :func:`field_path` drops it.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Discriminator, Tag

from .schemas import RerankRequestV1
from .tei import TeiRerankRequest

TEI = "TEI-shape"
DOCUMENTS = "documents-shape"


def _shape(body) -> str:
    if isinstance(body, TeiRerankRequest):
        return TEI
    if isinstance(body, dict) and "texts" in body and body.get("documents") is None:
        return TEI
    return DOCUMENTS


RerankBody = Annotated[
    Union[Annotated[RerankRequestV1, Tag(DOCUMENTS)], Annotated[TeiRerankRequest, Tag(TEI)]],
    Discriminator(_shape),
]


def field_path(loc) -> str:
    """A validation error's location as ``documents.2``: without ``body`` and the shape's tag; ``body`` if empty."""
    return ".".join(str(part) for part in loc if part not in ("body", TEI, DOCUMENTS)) or "body"
