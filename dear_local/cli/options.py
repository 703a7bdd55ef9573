"""Options shared by several commands, declared once (typer ``Annotated`` aliases)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer


class CpuBuffers(str, Enum):
    """llama.cpp's CPU weight buffers; see ``dear_local.backends.loader``."""

    auto = "auto"
    extra = "extra"
    plain = "plain"


CpuBuffersOption = Annotated[
    Optional[CpuBuffers],
    typer.Option(
        "--cpu-buffers",
        help="llama.cpp weight buffers: auto (plain on AMX builds, else extra), extra or plain. "
        "Default: $DEAR_LOCAL_CPU_BUFFERS, else auto; see `dear-local env`.",
        show_default=False,
    ),
]


def cpu_buffers_value(option: CpuBuffers | None) -> str | None:
    """The mode name to hand to the loader (None: the setting decides)."""
    return option.value if option is not None else None
