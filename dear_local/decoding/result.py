"""What decoding one window returns, whatever the mode."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

# Decides, from the token ids generated so far, whether generation is done.
StopCheck = Callable[[list[int]], bool]


@dataclass
class Generation:
    """One window's answer: output token ids and text, why it stopped, and its cost.

    ``stop_reason`` is ``eog`` (an end-of-generation token), ``complete`` (the
    answer holds a full permutation), ``budget`` (out of tokens) or ``single``.
    ``model_calls`` counts sequential forward passes, the prompt pass included;
    times are in seconds.
    """

    token_ids: list[int]
    text: str
    stop_reason: str
    model_calls: int
    prompt_seconds: float
    decode_seconds: float
    extra: dict = field(default_factory=dict)
