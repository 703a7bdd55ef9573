"""The pointwise (DeAR-P) input contract: a query and one document as token ids.

The template is data (``dear_local/templates/pointwise/*.toml``). A pair is tokenized as
the model card's ``simple_rerank.py`` tokenizes it with a Hugging Face tokenizer:
``tokenizer(f"query: {q}", f"document: {title} {text}", truncation=True, max_length=228)``.
Each segment is tokenized on its own; the pair template puts BOS before each; then the
pair is cut to ``max_length`` tokens, the two BOS included, the way the ``tokenizers``
library's ``longest_first`` strategy cuts it (:func:`longest_first`).

As for the listwise prompt (``dear_local.prompt``), query and document are user text:
special-token strings inside them are tokenized as ordinary text, so the reference and every
GGUF see the same ids whatever a document contains.
"""

from __future__ import annotations

from dataclasses import dataclass

from .data_files import DataFolder

DEFAULT_POINTWISE_TEMPLATE = "dear-p"  # what `dear-local convert` records in a pointwise GGUF


@dataclass(frozen=True)
class PointwiseTemplate:
    """How a (query, document) pair becomes a pointwise ranker's input (one file in ``templates/pointwise``)."""

    name: str
    description: str
    query: str  # with {query}
    document: str  # with {title} and {text}
    segment_prefix: str  # "bos": the BOS token before each segment; "": nothing
    max_length: int  # tokens of the whole pair, prefixes included
    truncation: str  # "longest_first", the only strategy
    pooling: str  # "last": the head reads the last token's hidden state

    def __post_init__(self) -> None:
        if self.truncation != "longest_first" or self.pooling != "last" or self.segment_prefix not in ("bos", ""):
            raise ValueError(f"pointwise template {self.name!r} asks for something dear-local does not implement")

    def texts(self, query: str, text: str, title: str = "") -> tuple[str, str]:
        """The two segments' text, before tokenization."""
        return self.query.format(query=query), self.document.format(title=title, text=text)


def longest_first(n_a: int, n_b: int, budget: int) -> tuple[int, int]:
    """How many tokens of each segment survive a ``longest_first`` cut to ``budget`` tokens.

    The ``tokenizers`` library's rule for a pair: nothing is cut when the two fit; else the
    shorter keeps its length and the longer gets the rest, unless the shorter alone takes
    more than its half, in which case each gets half (the second the odd token). Both
    segments keep their first tokens (truncation on the right).
    """
    if n_a + n_b <= budget:
        return n_a, n_b
    short, long_ = (n_b, n_a) if n_a > n_b else (n_a, n_b)
    long_ = short if short > budget else max(short, budget - short)
    if short + long_ > budget:
        short = budget // 2
        long_ = short + budget % 2
    return (long_, short) if n_a > n_b else (short, long_)


def cut_pair(
    tokenize, bos_id: int | None, tmpl: PointwiseTemplate, query: str, text: str, title: str = ""
) -> tuple[list[int], bool]:
    """The token ids of one (query, document) pair, as the pointwise model reads them, and whether the document was cut.

    ``tokenize(text) -> list[int]`` tokenizes user text with special parsing off and no BOS
    (both backends pass their own). The ids are at most ``tmpl.max_length``.

    Raises:
        UserInputError: the template puts BOS before each segment and the model has none.
    """
    a_text, b_text = tmpl.texts(query, text, title)
    a, b = tokenize(a_text), tokenize(b_text)
    prefix: list[int] = []
    if tmpl.segment_prefix == "bos":
        if bos_id is None or bos_id < 0:
            from ..errors import UserInputError

            raise UserInputError(f"pointwise template {tmpl.name!r} needs a BOS token, and this model has none")
        prefix = [bos_id]
    keep_a, keep_b = longest_first(len(a), len(b), tmpl.max_length - 2 * len(prefix))
    return prefix + a[:keep_a] + prefix + b[:keep_b], keep_b < len(b)


def pair_ids(tokenize, bos_id: int | None, tmpl: PointwiseTemplate, query: str, text: str, title: str = "") -> list[int]:
    """The token ids of one (query, document) pair (see :func:`cut_pair`)."""
    return cut_pair(tokenize, bos_id, tmpl, query, text, title)[0]


def probability(logit: float) -> float:
    """A pointwise logit as a probability of relevance: the logistic function, no fitted temperature or offset.

    The same (query, document) gets the same value in every request, whatever the other documents.
    """
    import math

    if logit >= 0:
        return 1.0 / (1.0 + math.exp(-logit))
    z = math.exp(logit)
    return z / (1.0 + z)


_TEMPLATES = DataFolder("dear_local.templates.pointwise", PointwiseTemplate, "pointwise template")


def list_pointwise_templates() -> list[PointwiseTemplate]:
    return list(_TEMPLATES.records().values())


def get_pointwise_template(name: str) -> PointwiseTemplate:
    """The pointwise template called ``name``.

    Raises:
        UnknownTemplateError: no such template; the message lists the known ones.
    """
    return _TEMPLATES.get(name)
