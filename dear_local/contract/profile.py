"""A profile fixes everything that changes a ranking's output.

Two runs with equal profiles (and equal weights) must produce equal rankings,
which is why reference files record their profile and ``check`` reuses it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from ..api_args import check_int, shown
from ..errors import UnknownProfileError
from .templates import get_template

DECODING_MODES = ("greedy", "constrained", "first-token")
MAX_WINDOW = 100


class StrideError(UnknownProfileError):
    """A stride larger than the window; ``stride_given``/``window_given`` are False for a value from the profile."""

    def __init__(self, window: int, stride: int, stride_given: bool, window_given: bool = True) -> None:
        self.window, self.stride = window, stride
        self.stride_given, self.window_given = stride_given, window_given
        if not stride_given:
            msg = f"stride (the profile's {stride}) must be at most window ({window}); pass stride={window} or less"
        elif not window_given:
            msg = f"stride ({stride}) must be at most window (the profile's {window}); pass window={stride} or more"
        else:
            msg = f"stride must be between 1 and window ({window}), got {stride}"
        super().__init__(msg)

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
        check_fields(template=self.template, decoding=self.decoding, window=self.window, stride=self.stride)
        get_template(self.template)  # raises UnknownTemplateError
        if self.decoding not in DECODING_MODES:
            raise UnknownProfileError(
                f"unknown decoding mode {self.decoding!r}; choose one of: {', '.join(DECODING_MODES)}"
            )
        object.__setattr__(self, "window", int(self.window))  # a numpy integer is stored as an int
        object.__setattr__(self, "stride", int(self.stride))
        if self.stride > self.window:
            raise StrideError(self.window, self.stride, stride_given=True)

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
        """A copy with the given fields changed; ``None`` values are ignored.

        Raises:
            UnknownProfileError: an unknown field, or a value of the wrong type or range, named
                by its argument (``template``, ``decoding`` a str; ``window`` an int in 1..100,
                ``stride`` an int in 1..window). :class:`StrideError` when only ``window`` was
                given and the profile's stride is larger.
            UnknownTemplateError: an unknown template name.
        """
        unknown = sorted(set(changes) - {"template", "decoding", "window", "stride"})
        if unknown:
            raise UnknownProfileError(f"unknown profile field {unknown[0]!r}; use template, decoding, window or stride")
        changes = {k: v for k, v in changes.items() if v is not None}
        check_fields(**changes)
        window = int(changes.get("window", self.window))
        stride = int(changes.get("stride", self.stride))
        if stride > window:
            raise StrideError(window, stride, stride_given="stride" in changes, window_given="window" in changes)
        return replace(self, **changes)


def check_fields(**fields) -> None:
    """Type and range of each given profile field, named as the Python argument."""
    for name in ("template", "decoding"):
        if name in fields and not isinstance(fields[name], str):
            raise UnknownProfileError(f"{name} must be a str, got {shown(fields[name])}")
    for name in ("window", "stride"):
        if name in fields:
            check_int(name, fields[name], 1, MAX_WINDOW, error=UnknownProfileError)
