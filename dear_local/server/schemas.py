"""Request and response bodies of the HTTP API (pydantic models, shown in the OpenAPI docs).

``POST /v1/rerank`` speaks the Cohere v1 and Jina shapes; ``POST /v2/rerank``
speaks Cohere v2; the TEI and Infinity shapes are in :mod:`.tei` and :mod:`.infinity`.
Fields those APIs define that a local listwise model cannot honour (``rank_fields``,
``max_chunks_per_doc``, ``max_tokens_per_doc``, ``relevant_spans``, ``priority``), and
any other field, are accepted and ignored, so existing clients work unchanged.

Types are strict where a client could mean something else: ``"3"`` is not an integer
(``3.0`` is, as in JSON Schema) and ``1`` is not a boolean. The one leniency: a boolean
may be sent as the string ``"true"`` or ``"false"``, as RAGFlow sends ``return_documents``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictStr
from pydantic.json_schema import WithJsonSchema

SCORE_DOC = (
    "In [0, 1]. With a pointwise first stage (serve --first-stage), the pointwise ranker's probability that "
    "the document is relevant: the same for a document in any request, so a threshold means the same "
    "everywhere (the listwise model still orders the top documents, so there it need not fall with rank). "
    "Otherwise it decreases with rank: with the first-token decoding mode and a request that fits in one "
    "window, the model's probability for the document's identifier as the first token of the ranking; "
    "else derived from rank alone, (n - rank) / n for n documents, so 1.0 for the best. "
    "`meta.scores` says which."
)


def _encodable(text: str) -> str:
    """Refuse strings holding lone surrogates (valid JSON escapes, but not text)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"is not valid Unicode text (lone surrogate at position {exc.start})") from None
    return text


Text = Annotated[StrictStr, AfterValidator(_encodable)]


def _no_text_or_bool(value):
    if isinstance(value, (str, bool)):
        raise ValueError("must be an integer")
    return value


# An integer as JSON Schema means it: 3 and 3.0, not "3", 3.5 or true.
Count = Annotated[int, Field(ge=1), BeforeValidator(_no_text_or_bool)]


def _has_text(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty or only whitespace")
    return text


Query = Annotated[
    StrictStr,
    Field(min_length=1, pattern=r"\S", description="The search query."),
    AfterValidator(_encodable),
    AfterValidator(_has_text),
]


def _lenient_bool(value):
    """``true``/``false``, or the strings ``"true"``/``"false"`` in any case; ``null`` is the default, false
    (clients send unset options as null); nothing else (not 1, not "yes")."""
    if value is None:
        return False
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if not isinstance(value, bool):
        raise ValueError('must be true or false (a JSON boolean, or the string "true" or "false")')
    return value


Flag = Annotated[
    bool,
    BeforeValidator(_lenient_bool),
    WithJsonSchema({"anyOf": [{"type": "boolean"}, {"type": "string", "enum": ["true", "false"]}, {"type": "null"}]}),
]


def _content_text(parts) -> str:
    """The text of Dify's multimodal document, ``{"content": [{"type": "text", "text": ...}, ...]}``.

    Text parts are joined with a newline; any other part (an image) is refused: the model reads text.
    """
    from ..formats.ids import json_type

    if not isinstance(parts, list) or not parts:
        raise ValueError(f'"content" must be a non-empty list of {{"type": "text", "text": ...}} parts, not {json_type(parts)}')
    texts = []
    for i, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text":
            shown = f'a part of type {kind!r}' if isinstance(kind, str) else json_type(part)
            raise ValueError(f'"content" part {i} is {shown}; only {{"type": "text", "text": ...}} parts can be ranked')
        if not isinstance(part.get("text"), str):
            raise ValueError(f'"content" part {i} needs a "text" string, not {json_type(part.get("text"))}')
        texts.append(part["text"])
    return "\n".join(texts)


def _unwrap_document(value):
    """Accept ``{"text": ...}`` objects (other keys ignored) and Dify's ``{"content": [...]}`` as their text.

    Anything else that is not a string is refused here, naming what it is, as the ``--jsonl``
    reader words it: a ``"text"`` of null or 5 is never ranked as the text ``None`` or ``5``.
    """
    from ..formats.ids import json_type

    if isinstance(value, dict):
        if "text" not in value and "content" in value:
            return _content_text(value["content"])
        if "text" not in value:
            raise ValueError('a document object needs a "text" field (or a "content" list of text parts)')
        text = value["text"]
        if not isinstance(text, str):
            raise ValueError(f'"text" must be a string, not {json_type(text)}')
        return text
    if not isinstance(value, str):
        raise ValueError(f'a document must be a string or an object with a "text" string, not {json_type(value)}')
    return value


_TEXT_PART = {"type": "object", "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
              "required": ["type", "text"]}
_STRING_OR_TEXT = {
    "anyOf": [
        {"type": "string"},
        {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        {"type": "object", "properties": {"content": {"type": "array", "items": _TEXT_PART, "minItems": 1}},
         "required": ["content"]},
    ],
    "description": 'A document: a string, an object whose "text" is used, or one whose "content" is a list '
                   'of {"type": "text", "text": ...} parts (joined with newlines).',
}

Document = Annotated[Text, BeforeValidator(_unwrap_document), WithJsonSchema(_STRING_OR_TEXT)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: Text | None = Field(
        None, description="Any name is accepted: the server ranks with the model it loaded. "
        "`POST /rerank` (the Infinity shape) echoes it back; the Cohere and Jina shapes name the served model.",
    )
    query: Query
    top_n: Count | None = Field(
        None, description="Return only the best `top_n` results (all by default)."
    )


class RerankRequestV1(_Request):
    """Cohere v1, Jina and Infinity: documents are strings, `{"text": ...}` objects or `{"content": [...]}`."""

    documents: list[Document] = Field(
        ..., min_length=1, description="The documents to rank (at most the server's --max-documents)."
    )
    return_documents: Flag = Field(False, description="Include each document's text in its result.")

    def texts(self) -> list[str]:
        return list(self.documents)


class RerankRequestV2(_Request):
    """Cohere v2: documents are strings."""

    documents: list[Text] = Field(
        ..., min_length=1, description="The documents to rank (at most the server's --max-documents)."
    )
    return_documents: Flag = Field(False, description="Include each document's text in its result.")

    def texts(self) -> list[str]:
        return list(self.documents)


class ResultDocument(BaseModel):
    text: str


class RerankResultItem(BaseModel):
    index: int = Field(..., description="Position of the document in the request.")
    relevance_score: float = Field(..., ge=0.0, le=1.0, description=SCORE_DOC)
    document: ResultDocument | None = Field(None, description="Present when `return_documents` was true.")
    truncated: bool = Field(
        False, description="The document was longer than the profile's passage limit and was cut before ranking."
    )


class ApiVersion(BaseModel):
    version: str


class BilledUnits(BaseModel):
    search_units: int = 1
    input_tokens: int
    output_tokens: int


class Tokens(BaseModel):
    input_tokens: int = Field(..., description="Prompt tokens over all windows and every first-stage pair.")
    output_tokens: int = Field(..., description="Generated tokens over all windows.")


class Meta(BaseModel):
    api_version: ApiVersion
    billed_units: BilledUnits
    tokens: Tokens
    warnings: list[str] = Field(
        default_factory=list, description="E.g. which documents were truncated, or that the deadline came first."
    )
    complete: bool = Field(
        True, description="False when the request's deadline came before the last window: the order then holds "
        "the windows that finished, every other document in input order, and scores derived from rank.",
    )
    scores: Literal["first-token-probability", "pointwise-probability", "rank"] = Field(
        ..., description="What `relevance_score` is: with a pointwise first stage, its probability of relevance, "
        "the same for a document in any request.",
    )
    template: str = Field(..., description="The listwise template (a pointwise ranker alone: its template).")
    decoding: str = Field(..., description='The listwise decoding (a pointwise ranker alone: "pointwise").')
    first_stage: str | None = Field(None, description="The pointwise first stage's template, if one ran.")
    parse_status: list[str] = Field(..., description="The ranking parser's status for each window.")


class Usage(BaseModel):
    """Jina's token counts."""

    total_tokens: int
    prompt_tokens: int


class RerankResponseV1(BaseModel):
    id: str
    model: str
    results: list[RerankResultItem] = Field(..., description="Best first.")
    meta: Meta
    usage: Usage


class RerankResponseV2(BaseModel):
    id: str
    model: str
    results: list[RerankResultItem] = Field(..., description="Best first.")
    meta: Meta


class ErrorBody(BaseModel):
    error: str = Field(..., description="A short machine-readable code, e.g. `invalid_request`.")
    message: str = Field(..., description="What went wrong and what to do about it.")
    details: list[str] | None = None


class QueueInfo(BaseModel):
    pending: int
    max_pending: int
    busy: bool
    completed: int
    dropped: int
    rejected: int


class Health(BaseModel):
    status: Literal["ok", "shutting_down"]
    model: str
    queue: QueueInfo


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "dear-local"
    template: str
    decoding: str
    window: int | None = Field(..., description="Passages per window; null without a listwise model.")
    stride: int | None = Field(..., description="Step between windows; null without a listwise model.")
    max_documents: int
    first_stage: str | None = Field(None, description="The pointwise first stage's template, if one runs.")
    listwise_depth: int | None = Field(None, description="How many of the first stage's best the listwise "
                                       "model reorders, when both run.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
