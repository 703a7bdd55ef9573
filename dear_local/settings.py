"""Every environment variable dear-local reads, in one place.

Settings are read when asked for, never cached at import time, so tests and
long-running apps see changes to the environment.

- ``DEAR_LOCAL_HOME``: where models are stored (default: the user cache dir).
- ``DEAR_LOCAL_DATA``: an offline mirror of the eval data (``../shared/data`` in tests).
- ``DEAR_LOCAL_DEBUG=1``: show tracebacks instead of one-line errors.
- ``DEAR_LOCAL_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``: never download.
- ``DEAR_LOCAL_NO_PROGRESS=1``: no progress bars.
- ``DEAR_LOCAL_API_KEY``: the key ``dear-local serve`` requires, when set.
- ``DEAR_LOCAL_CPU_BUFFERS``: ``auto`` (default), ``extra`` or ``plain``: how llama.cpp
  lays out weights in CPU memory (see ``dear_local.backends.loader``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _default_home() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("dear-local", appauthor=False))


@dataclass(frozen=True)
class Settings:
    home: Path
    data_dir: Path | None
    debug: bool
    offline: bool
    progress: bool
    api_key: str | None
    cpu_buffers: str

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def data_cache(self) -> Path:
        return self.home / "data"


def get_settings() -> Settings:
    home = os.environ.get("DEAR_LOCAL_HOME")
    data = os.environ.get("DEAR_LOCAL_DATA")
    return Settings(
        home=Path(home).expanduser() if home else _default_home(),
        data_dir=Path(data).expanduser() if data else None,
        debug=_flag("DEAR_LOCAL_DEBUG"),
        offline=_flag("DEAR_LOCAL_OFFLINE") or _flag("HF_HUB_OFFLINE"),
        progress=not _flag("DEAR_LOCAL_NO_PROGRESS"),
        api_key=os.environ.get("DEAR_LOCAL_API_KEY") or None,
        cpu_buffers=os.environ.get("DEAR_LOCAL_CPU_BUFFERS", "").strip() or "auto",
    )
