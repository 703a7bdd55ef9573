"""A window's prompt: passages cut to the template's caps, the template rendered, then tokens.

The tokenization rule: only the template's own markers become special tokens.
The chat template writes markers such as ``<|start_header_id|>`` or
``<|im_end|>``; the query and the passages are user text, and special-token
text inside them (``<|eot_id|>`` in a web page) is tokenized as the ordinary
text it is, so a document cannot end a turn or open a fake assistant turn.

How: the template is rendered with every piece of user text wrapped in two
Unicode noncharacters that occur nowhere in the request. The rendered prompt
is split into pieces of template text and pieces of user text; the template's
markers are found in its own pieces only; the text between two markers
(template and user text together) is tokenized with special parsing off, and
each marker becomes its token. Both tokenizers (llama.cpp and Hugging Face)
split text at special tokens before anything else, so for text without
special-token strings the ids are exactly those of tokenizing the whole prompt
with special parsing on. Both backends go through this one function, so the
reference and every GGUF tokenize a prompt identically.

Passages are cut by the template first (its source's character or word cut),
then to at most ``max_passage_tokens`` tokens, which holds in every script.
Characters the vocabulary cannot spell are removed from user text first (:func:`spellable`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from .backends.base import Backend
from .contract.templates import Template
from .errors import ChatTemplateError, ContextOverflowError, UserInputError

# Unicode noncharacters: reserved for a program's internal use, never assigned.
_MARKS = [chr(c) for c in range(0xFDD0, 0xFDF0)]


@dataclass(frozen=True)
class Passage:
    """One passage as it goes into the prompt."""

    text: str  # after the template's cut and the token cap
    truncated: bool  # True when part of the original was dropped


@dataclass(frozen=True)
class Rendered:
    """A rendered prompt as pieces of ``(text, is_user_text)``, in order."""

    pieces: tuple[tuple[str, bool], ...]
    add_bos: bool

    @property
    def text(self) -> str:
        return "".join(t for t, _ in self.pieces)


def _unspellable_bytes(backend: Backend) -> bytes:
    """The bytes no token of this vocabulary stands for alone (none for Llama-3; a few for SmolLM2)."""
    missing = backend.__dict__.get("_unspellable_bytes")
    if missing is None:
        single = {piece[0] for piece in backend.vocab_pieces() if len(piece) == 1}
        missing = backend._unspellable_bytes = bytes(b for b in range(256) if b not in single)
    return missing


def spellable(backend: Backend, text: str) -> str:
    """``text`` without the characters this vocabulary cannot spell.

    A byte-level BPE vocabulary with no token for some byte (SmolLM2 has none for six
    control bytes, nor for the lead bytes of the unassigned planes 4-11) makes both
    tokenizers drop such a character, but Hugging Face drops it before it splits the text
    and llama.cpp after, so its neighbours merge differently and the prompt ids of the
    reference and the GGUF part ways. Removing it first gives both the same text; with a
    vocabulary that spells every byte (Llama-3, DeAR) nothing changes.
    """
    missing = _unspellable_bytes(backend)
    if not missing or not text:
        return text
    data = text.encode("utf-8", "surrogatepass")
    if len(data.translate(None, missing)) == len(data):
        return text
    return "".join(ch for ch in text if not set(ch.encode("utf-8", "surrogatepass")) & set(missing))


# How much of a passage is read: text is cut to a prefix before anything costly runs on it
# (removing unspellable characters, the template's cut, tokenizing), so a document of any size
# costs about what its first few thousand tokens cost. See ``cut_passage``.
FIRST_CHARS_PER_TOKEN = 4  # the first prefix read: this many characters per token of the cap
MARGIN_TOKENS = 64  # tokens past the cap that the prefix must yield before its end is trusted


def _head(tmpl: Template, text: str, size: int) -> str:
    """``text[:size]``, shortened so it does not end inside an occurrence of ``tmpl.strip_prefix``."""
    head = text[:size]
    prefix = tmpl.strip_prefix
    for k in range(min(len(prefix) - 1, len(head)), 0, -1):
        if head.endswith(prefix[:k]) and text[size - k : size - k + len(prefix)] == prefix:
            return head[:-k]
    return head


def cut_passage(
    backend: Backend, tmpl: Template, text: str, *, first_chars_per_token: int = FIRST_CHARS_PER_TOKEN
) -> Passage:
    """Cut ``text`` as the template's source does, then to ``tmpl.max_passage_tokens`` tokens.

    The token cut keeps whole characters: its tokens' bytes are decoded and a
    character split between two tokens is dropped, and the result tokenizes
    to at most the cap on its own.

    Cost: bounded by the cap, not by ``text``. Only a prefix ``head`` of the text is read,
    starting at ``first_chars_per_token * cap`` characters and doubled until one of these holds:

    1. ``head`` is the whole text: the cut is the plain one.
    2. The template's own cut drops part of ``head`` (more than 300 characters, or more than
       300 words). Removing unspellable characters works character by character, so the
       cleaned ``head`` is a prefix of the cleaned text; ``head`` never ends inside an
       occurrence of the template's ``strip_prefix``, so removing it keeps that true. A cut
       to N characters, or to N words when word N+1 has begun (so word N was followed by
       whitespace), is then the same on the prefix as on the whole: the snippet is exact.
    3. The snippet of ``head`` tokenizes to at least ``cap + MARGIN_TOKENS`` tokens. By (2)'s
       argument that snippet is a prefix of the whole text's snippet (a word cut to fewer than
       N words keeps whole words, the last possibly partial, so it is a prefix too). A
       tokenizer splits text into pre-tokens (words, digit groups, space runs, punctuation)
       by looking at most a character ahead, and merges within each pre-token; the text
       past the end of ``head`` can change only the tokens of the pre-token it continues,
       and within one pre-token a BPE merge decision reaches back only through a chain of
       ever-higher-priority neighbouring merges, a few tokens in practice. With a margin of
       64 tokens past the cap, the first ``cap`` tokens are those of the whole snippet, so
       the cut to ``cap`` tokens is the same. Every token covers at least one byte, so the
       first ``cap + MARGIN_TOKENS`` tokens are reached once ``head`` holds that many
       characters (times the longest token, for text of long tokens): the loop ends after
       at most a bounded number of doublings whatever the length of ``text``.
       ``tests/test_inputs_hostile.py`` checks the equality against the full-text cut
       on random texts, with and without spaces, at several starting sizes.

    A document that is mostly whitespace makes (2) and (3) wait for its first words; the cost
    is then a few linear passes of string slicing, never the tokenizer on the whole text.
    """
    cap = tmpl.max_passage_tokens
    size = max(1, first_chars_per_token) * cap
    while True:
        whole = size >= len(text)
        head = text if whole else _head(tmpl, text, size)
        clean = spellable(backend, head)
        truncated = tmpl.is_cut(clean)
        snippet = tmpl.snippet(clean)
        ids = backend.tokenize(snippet, add_bos=False, special=False)
        if whole or truncated or len(ids) >= cap + MARGIN_TOKENS:
            break
        size *= 2
    if len(ids) > cap:
        return Passage(token_cut(backend, ids, cap), True)
    return Passage(snippet, truncated)


def token_cut(backend: Backend, ids: list[int], cap: int) -> str:
    """The text of the first tokens of ``ids`` that re-tokenizes to at most ``cap`` tokens.

    Whole characters only: a character split between two tokens is dropped.
    """
    keep = cap
    while True:
        text = b"".join(backend.token_bytes(t) for t in ids[:keep]).decode("utf-8", "ignore")
        if keep == 0 or len(backend.tokenize(text, add_bos=False, special=False)) <= cap:
            return text
        keep -= 1


def render(backend: Backend, tmpl: Template, query: str, snippets: Sequence[str]) -> Rendered:
    """The prompt for ``query`` and passages that are already cut, with the user text marked."""
    query, snippets = spellable(backend, query), [spellable(backend, t) for t in snippets]
    fields = [query, *snippets]
    free = [m for m in _MARKS if not any(m in f for f in fields)]
    if len(free) < 2:
        raise UserInputError(
            "the query and passages hold every Unicode noncharacter U+FDD0..U+FDEF; "
            "remove them (they are not text)"
        )
    open_, close = free[0], free[1]

    def mark(s: str) -> str:
        return f"{open_}{s}{close}"

    if tmpl.kind == "raw":
        marked = tmpl.raw_text(query, list(snippets), mark)
        plain = None
        add_bos = backend.add_bos
    else:
        marked = backend.render_chat(tmpl.chat_messages(query, list(snippets), mark))
        plain = backend.render_chat(tmpl.chat_messages(query, list(snippets)))
        add_bos = False  # the chat template writes the BOS text itself
    pieces: list[tuple[str, bool]] = []
    pos = 0
    for m in re.finditer(f"{open_}(.*?){close}", marked, re.DOTALL):
        if m.start() > pos:
            pieces.append((marked[pos : m.start()], False))
        pieces.append((m.group(1), True))
        pos = m.end()
    if pos < len(marked):
        pieces.append((marked[pos:], False))
    rendered = Rendered(tuple(pieces), add_bos)
    if plain is not None and rendered.text != plain:
        raise ChatTemplateError(
            "the model's chat template changes the text of the messages, so the passages cannot be "
            "kept apart from its control tokens; use --template card"
        )
    return rendered


def _marker_pattern(specials: dict[str, int]) -> re.Pattern | None:
    if not specials:
        return None
    # Longest first, so a marker that contains another is matched whole.
    return re.compile("|".join(re.escape(t) for t in sorted(specials, key=len, reverse=True)))


def segments(rendered: Rendered, specials: dict[str, int]) -> list[str | int]:
    """The prompt as text runs (``str``) and template markers (their token id), in order.

    Markers are looked for in the template's pieces only; user text never
    yields one, and neither does a marker that user text completes.
    """
    pattern = _marker_pattern(specials)
    out: list[str | int] = []
    run: list[str] = []
    for text, user in rendered.pieces:
        if user or pattern is None:
            run.append(text)
            continue
        pos = 0
        for m in pattern.finditer(text):
            run.append(text[pos : m.start()])
            if any(run):
                out.append("".join(run))
            run = []
            out.append(specials[m.group(0)])
            pos = m.end()
        run.append(text[pos:])
    if any(run):
        out.append("".join(run))
    return out


def encode(backend: Backend, rendered: Rendered) -> list[int]:
    """Token ids of a rendered prompt: markers as special tokens, everything else as text."""
    ids = backend.tokenize("", add_bos=True) if rendered.add_bos else []
    for seg in segments(rendered, backend.special_token_ids()):
        if isinstance(seg, int):
            ids.append(seg)
        else:
            ids.extend(backend.tokenize(seg, add_bos=False, special=False))
    return ids


def check_query(backend: Backend, query: str) -> None:
    """Refuse a query that alone needs more tokens than the context holds, at a cost bounded by
    the context, not by the query.

    Raises :class:`~dear_local.errors.ContextOverflowError` naming the query.

    Only a prefix ``head`` of the query is read, ``FIRST_CHARS_PER_TOKEN * n_ctx`` characters
    at first, doubled until ``head`` is the whole query (nothing refused here: the prompt's
    own check, which counts the passages and the answer too, decides) or one of these proves
    the query too long:

    1. The cleaned ``head`` (unspellable characters removed; that works character by
       character, so it is a prefix of the cleaned query) tokenizes to more than
       ``n_ctx + MARGIN_TOKENS`` tokens. By the argument in :func:`cut_passage`, text past
       the end of ``head`` can change only the last few tokens (far fewer than the margin),
       so the whole query has more than ``n_ctx`` tokens.
    2. The cleaned ``head`` holds more than ``n_ctx * L`` bytes, ``L`` the longest token in
       bytes. Every token stands for at most ``L`` bytes, so any tokenization of it, and so of
       the query it begins, has more than ``n_ctx`` tokens.

    So the tokenizer never reads more than ``2 * n_ctx * max(L, FIRST_CHARS_PER_TOKEN)``
    characters, and for ordinary text (a few characters a token) rule 1 ends the first round:
    a 4 MB query is refused after tokenizing ``4 * n_ctx`` characters.
    """
    n_ctx = backend.n_ctx
    size = FIRST_CHARS_PER_TOKEN * n_ctx
    longest: int | None = None
    while size < len(query):
        clean = spellable(backend, query[:size])
        n_tokens = len(backend.tokenize(clean, add_bos=False, special=False))
        proved = n_tokens > n_ctx + MARGIN_TOKENS
        if not proved:
            if longest is None:
                try:
                    longest = max(1, max(map(len, backend.vocab_pieces()), default=1))
                except NotImplementedError:  # no token bytes: the prompt's own check decides
                    return
            proved = len(clean.encode("utf-8", "surrogatepass")) > n_ctx * longest
        if proved:
            raise ContextOverflowError(
                f"the query is too long: its first {size} characters alone need more than the {n_ctx} "
                f"tokens the context holds ({len(query)} characters in all); shorten the query "
                "(or pass a larger --n-ctx)"
            )
        size *= 2


def prompt_for(backend: Backend, tmpl: Template, query: str, passages: Sequence[Passage]) -> list[int]:
    """Token ids of the prompt for one window of passages that are already cut.

    Raises ``ContextOverflowError`` for a query that alone overflows the context
    (:func:`check_query`), before the query is tokenized whole.
    """
    check_query(backend, query)
    return encode(backend, render(backend, tmpl, query, [p.text for p in passages]))


def truncation_warning(tmpl: Template, indices: Sequence, label: str = "index", *, pointwise=None,
                       listwise: bool = True) -> str:
    """The one-line warning naming the documents that were cut (by input index, or docid with ``label``).

    ``pointwise`` is the first stage's :class:`~dear_local.contract.pointwise.PointwiseTemplate` when one
    scored the documents (its pair limit is named too); ``listwise`` False when no listwise model ran
    (``tmpl``'s limit is then not named).
    """
    shown = ", ".join(str(i) for i in indices[:20]) + (", ..." if len(indices) > 20 else "")
    if pointwise is None:
        return (
            f"{len(indices)} document(s) ({label} {shown}) are longer than the {tmpl.name} template's passage "
            f"limit of {tmpl.limit_text()}; only their first {tmpl.limit_text()} were ranked"
        )
    limits = [f"the {pointwise.name} pointwise template's limit of {pointwise.max_length} tokens for query and "
              "document together"]
    if listwise:
        limits.append(f"the {tmpl.name} template's passage limit of {tmpl.limit_text()}")
    return (f"{len(indices)} document(s) ({label} {shown}) are longer than {' or '.join(limits)}; only what fits "
            "was scored and ranked")
