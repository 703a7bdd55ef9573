"""Progress bars that can be switched off with ``DEAR_LOCAL_NO_PROGRESS=1``."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

from .settings import get_settings


def bar(total: int | None = None, desc: str | None = None, unit: str = "it", **kw) -> tqdm:
    """A tqdm bar on stderr, hidden when progress is off or stderr is not a terminal."""
    hidden = kw.pop("disable", False)  # popped first: ``or`` would skip it when progress is off
    disable = not get_settings().progress or hidden
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=unit == "B",
        file=sys.stderr,
        disable=disable,
        leave=False,
        **kw,
    )
