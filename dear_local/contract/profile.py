"""A profile fixes everything that changes a ranking's output.

Two runs with equal profiles (and equal weights) must produce equal rankings,
which is why reference files record their profile and ``check`` reuses it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from ..errors import UnknownProfileError
from .templates import get_template

DECODING_MODES = ("greedy", "constrained", "first-token")

# Output tokens one id can take: "[", up to 3 digit tokens, "]", " >" (one spare).
TOKENS_PER_ID = 7
OUTPUT_SLACK = 16
# A passage takes at most its template's ``max_passage_tokens``; around it go
# its id and separator ("[19] ", "\n": raw) or two chat turns (chat), and up to
# two tokens where the cut text meets them.
PROMPT_OVERHEAD = 256
PER_PASSAGE_OVERHEAD = {"raw": 8, "chat": 32}


@dataclass(frozen=True)
class Profile:
    template: str = "card"
    window: int = 20
    stride: int = 10
    decoding: str = "greedy"

    def __post_init__(self) -> None:
        get_template(self.template)  # raises UnknownTemplateError
        if self.decoding not in DECODING_MODES:
            raise UnknownProfileError(
                f"unknown decoding mode {self.decoding!r}; choose one of: {', '.join(DECODING_MODES)}"
            )
        if not 1 <= self.window <= 100:
            raise UnknownProfileError(f"window must be between 1 and 100, got {self.window}")
        if not 1 <= self.stride <= self.window:
            raise UnknownProfileError(
                f"stride must be between 1 and the window ({self.window}), got {self.stride}"
            )

    @property
    def tmpl(self):
        return get_template(self.template)

    def max_new_tokens(self, n: int | None = None) -> int:
        """Output budget for a window of ``n`` ids: a whole permutation plus slack.

        The card's ``max_new_tokens=50`` cuts a 20-id ranking short; this does not.
        """
        n = self.window if n is None else n
        return n * TOKENS_PER_ID + OUTPUT_SLACK

    def context_tokens(self) -> int:
        """The context a full window needs: prompt worst case plus the output budget.

        Every passage is capped at the template's ``max_passage_tokens``, so a
        window of passages of any length and script fits (a query of more than
        about 100 tokens can still overflow it).
        """
        t = self.tmpl
        per_passage = t.max_passage_tokens + PER_PASSAGE_OVERHEAD[t.kind]
        return PROMPT_OVERHEAD + self.window * per_passage + self.max_new_tokens()

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Profile":
        known = {k: data[k] for k in ("template", "window", "stride", "decoding") if k in data}
        return cls(**known)

    def with_(self, **changes) -> "Profile":
        """A copy with the given fields changed; ``None`` values are ignored."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})
