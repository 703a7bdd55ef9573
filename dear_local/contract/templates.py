"""Prompt templates, stored as data in ``dear_local/templates/*.toml``.

A template turns a query and a window of passages into either raw prompt text
(``kind = "raw"``) or a list of chat messages (``kind = "chat"``) that the
backend renders with the model's own chat template.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from ..errors import UnknownTemplateError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Message = dict  # {"role": str, "content": str}


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    kind: str  # "raw" or "chat"
    id_base: int
    truncate_unit: str  # "chars" or "words"
    truncate_limit: int
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

    def label(self, index: int) -> str:
        """The identifier text of the window's ``index``-th passage, e.g. ``[3]``."""
        return f"[{index + self.id_base}]"

    def render_raw(self, query: str, passages: list[str]) -> str:
        n = len(passages)
        body = self.passage_separator.join(
            self.passage.format(id=i + self.id_base, text=self.snippet(p)) for i, p in enumerate(passages)
        )
        return self.header.format(n=n, query=query) + body + self.footer.format(n=n, query=query)

    def render_messages(self, query: str, passages: list[str]) -> list[Message]:
        n = len(passages)
        msgs: list[Message] = []
        if self.system:
            msgs.append({"role": "system", "content": self.system})
        msgs.append({"role": "user", "content": self.header.format(n=n, query=query)})
        msgs.append({"role": "assistant", "content": self.header_reply})
        for i, p in enumerate(passages):
            pid = i + self.id_base
            msgs.append({"role": "user", "content": self.passage.format(id=pid, text=self.snippet(p))})
            msgs.append({"role": "assistant", "content": self.passage_reply.format(id=pid)})
        msgs.append({"role": "user", "content": self.footer.format(n=n, query=query)})
        return msgs


def _template_files():
    return sorted(
        (f for f in resources.files("dear_local.templates").iterdir() if f.name.endswith(".toml")),
        key=lambda f: f.name,
    )


@lru_cache(maxsize=None)
def _load_all() -> dict[str, Template]:
    out = {}
    for f in _template_files():
        data = tomllib.loads(f.read_text(encoding="utf-8"))
        out[data["name"]] = Template(**data)
    return out


def list_templates() -> list[Template]:
    return list(_load_all().values())


def get_template(name: str) -> Template:
    templates = _load_all()
    if name not in templates:
        raise UnknownTemplateError(
            f"unknown template {name!r}; choose one of: {', '.join(templates)} (see `dear-local templates`)"
        )
    return templates[name]
