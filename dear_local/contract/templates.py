"""Prompt templates, stored as data in ``dear_local/templates/*.toml``.

A template turns a query and a window of passages into either raw prompt text
(``kind = "raw"``) or a list of chat messages (``kind = "chat"``) that the
backend renders with the model's own chat template.

Each passage is cut twice: first as the template's source code cuts it (300
characters for ``card``, 300 words for ``rankgpt-chat``), then to at most
``max_passage_tokens`` tokens, a cap that holds in every script (text without
spaces is one "word"). The token cap lives in ``dear_local.prompt``, which has
the tokenizer; here are the text-only parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .data_files import DataFolder


Message = dict  # {"role": str, "content": str}
Mark = Callable[[str], str]  # wraps a piece of user text (query or passage) while rendering


def _same(text: str) -> str:
    return text


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    kind: str  # "raw" or "chat"
    id_base: int
    truncate_unit: str  # "chars" or "words"
    truncate_limit: int
    max_passage_tokens: int  # cap after the source's cut, in the model's tokens
    strip_prefix: str
    header: str
    passage: str
    footer: str
    answer_prefix: str
    passage_separator: str = "\n"
    system: str = ""
    header_reply: str = ""
    passage_reply: str = ""

    def snippet(self, text: str) -> str:
        """Cut one passage the way the template's source code does."""
        if self.truncate_unit == "chars":
            return text[: self.truncate_limit]
        if self.strip_prefix:
            text = text.replace(self.strip_prefix, "")
        return " ".join(text.strip().split()[: self.truncate_limit])

    def is_cut(self, text: str) -> bool:
        """True when :meth:`snippet` drops part of ``text`` (characters or words past the limit)."""
        if self.truncate_unit == "chars":
            return len(text) > self.truncate_limit
        if self.strip_prefix:
            text = text.replace(self.strip_prefix, "")
        return len(text.split()) > self.truncate_limit

    def limit_text(self) -> str:
        """The passage limit in words for messages, e.g. ``300 words or 640 tokens``."""
        unit = "characters" if self.truncate_unit == "chars" else "words"
        return f"{self.truncate_limit} {unit} or {self.max_passage_tokens} tokens"

    def label(self, index: int) -> str:
        """The identifier text of the window's ``index``-th passage, e.g. ``[3]``."""
        return f"[{index + self.id_base}]"

    def render_raw(self, query: str, passages: list[str]) -> str:
        """The raw prompt text, passages cut by :meth:`snippet` (``kind = "raw"``)."""
        return self.raw_text(query, [self.snippet(p) for p in passages])

    def render_messages(self, query: str, passages: list[str]) -> list[Message]:
        """The chat messages, passages cut by :meth:`snippet` (``kind = "chat"``)."""
        return self.chat_messages(query, [self.snippet(p) for p in passages])

    def raw_text(self, query: str, snippets: list[str], mark: Mark = _same) -> str:
        """The raw prompt around passages that are already cut; ``mark`` wraps each user text."""
        n = len(snippets)
        q = mark(query)
        body = self.passage_separator.join(
            self.passage.format(id=i + self.id_base, text=mark(s)) for i, s in enumerate(snippets)
        )
        return self.header.format(n=n, query=q) + body + self.footer.format(n=n, query=q)

    def chat_messages(self, query: str, snippets: list[str], mark: Mark = _same) -> list[Message]:
        """The chat messages around passages that are already cut; ``mark`` wraps each user text."""
        n = len(snippets)
        q = mark(query)
        msgs: list[Message] = []
        if self.system:
            msgs.append({"role": "system", "content": self.system})
        msgs.append({"role": "user", "content": self.header.format(n=n, query=q)})
        msgs.append({"role": "assistant", "content": self.header_reply})
        for i, s in enumerate(snippets):
            pid = i + self.id_base
            msgs.append({"role": "user", "content": self.passage.format(id=pid, text=mark(s))})
            msgs.append({"role": "assistant", "content": self.passage_reply.format(id=pid)})
        msgs.append({"role": "user", "content": self.footer.format(n=n, query=q)})
        return msgs


_TEMPLATES = DataFolder("dear_local.templates", Template, "template", " (see `dear-local templates`)")


def list_templates() -> list[Template]:
    return list(_TEMPLATES.records().values())


def get_template(name: str) -> Template:
    return _TEMPLATES.get(name)
