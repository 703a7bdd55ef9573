"""Every environment variable dear-local reads, and every default, in one place.

The way ``huggingface_hub/constants.py`` does it: the names of the variables and the
defaults they fall back to are constants here, and nothing else in the package spells
them. Settings are read when asked for, never cached at import time, so tests and
long-running apps see changes to the environment.

- ``DEAR_LOCAL_HOME``: where models are stored (default: the user cache dir).
- ``DEAR_LOCAL_DATA``: an offline mirror of the eval data (``../shared/data`` in tests).
- ``DEAR_LOCAL_DEBUG=1``: show tracebacks instead of one-line errors.
- ``DEAR_LOCAL_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``: never download.
- ``DEAR_LOCAL_NO_PROGRESS=1``: no progress bars.
- ``DEAR_LOCAL_API_KEY``: the key ``dear-local serve`` requires, when set.
- ``DEAR_LOCAL_SERVER_API_KEY``: the key sent to ``--server`` inference servers.
- ``DEAR_LOCAL_CPU_BUFFERS``: ``auto`` (default), ``extra`` or ``plain``: how llama.cpp
  lays out weights in CPU memory (see ``dear_local.backends.loader``).
- ``DEAR_LOCAL_FLASH_ATTN``: llama.cpp's flash attention, on by default (``0`` turns it off); it
  evaluated prompts 5-21% faster on the AMD EPYC of docs/performance.md.
- ``DEAR_LOCAL_CPU_VARIANT``: ``auto`` (default), ``baseline`` or a variant name such as
  ``haswell``: which of llama.cpp's CPU backends to load (see ``dear_local.backends.cpu_variant``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# -- environment variables -------------------------------------------------------------------------
ENV_HOME = "DEAR_LOCAL_HOME"
ENV_DATA = "DEAR_LOCAL_DATA"
ENV_DEBUG = "DEAR_LOCAL_DEBUG"
ENV_OFFLINE = "DEAR_LOCAL_OFFLINE"
ENV_HF_OFFLINE = "HF_HUB_OFFLINE"
ENV_NO_PROGRESS = "DEAR_LOCAL_NO_PROGRESS"
ENV_API_KEY = "DEAR_LOCAL_API_KEY"
ENV_SERVER_API_KEY = "DEAR_LOCAL_SERVER_API_KEY"
ENV_CPU_BUFFERS = "DEAR_LOCAL_CPU_BUFFERS"
ENV_FLASH_ATTN = "DEAR_LOCAL_FLASH_ATTN"
ENV_CPU_VARIANT = "DEAR_LOCAL_CPU_VARIANT"

# -- defaults of the run options (see dear_local.run_options) ----------------------------------------
DEFAULT_CPU_BUFFERS = "auto"
DEFAULT_CPU_VARIANT = "auto"
DEFAULT_FLASH_ATTN = True
DEFAULT_N_GPU_LAYERS = 0
DEFAULT_PROTOCOL = "auto"
DEFAULT_REQUEST_TIMEOUT = 120.0
DEFAULT_SERVER_RETRIES = 3  # attempts after the first on one server, waiting 0.5 s, 1 s, 2 s ...
DEFAULT_LORA_SCALE = 1.0
DEFAULT_LISTWISE_DEPTH = 30  # DeAR's run_listwise.sh: --rank_end 30 --window_size 20 --step 10, two windows
DEFAULT_FIRST_STAGE_BATCH = 8  # documents per llama.cpp call of a pointwise ranker

# -- defaults of `dear-local serve` (see dear_local.server.config) -----------------------------------
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_MAX_QUEUE = 32
DEFAULT_TIMEOUT = 300.0
DEFAULT_MAX_BODY_BYTES = 8 * 2**20

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _switch(name: str, default: bool) -> bool:
    """A setting that is on or off: ``1/true/yes/on`` or ``0/false/no/off``; unset or anything else, ``default``."""
    value = os.environ.get(name, "").strip().lower()
    return True if value in _TRUE else False if value in _FALSE else default


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
    server_api_key: str | None = None
    flash_attn: bool = DEFAULT_FLASH_ATTN
    cpu_variant: str = DEFAULT_CPU_VARIANT

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def data_cache(self) -> Path:
        return self.home / "data"


def get_settings() -> Settings:
    home = os.environ.get(ENV_HOME)
    data = os.environ.get(ENV_DATA)
    return Settings(
        home=Path(home).expanduser() if home else _default_home(),
        data_dir=Path(data).expanduser() if data else None,
        debug=_flag(ENV_DEBUG),
        offline=_flag(ENV_OFFLINE) or _flag(ENV_HF_OFFLINE),
        progress=not _flag(ENV_NO_PROGRESS),
        api_key=os.environ.get(ENV_API_KEY) or None,
        cpu_buffers=os.environ.get(ENV_CPU_BUFFERS, "").strip() or DEFAULT_CPU_BUFFERS,
        server_api_key=os.environ.get(ENV_SERVER_API_KEY) or None,
        flash_attn=_switch(ENV_FLASH_ATTN, DEFAULT_FLASH_ATTN),
        cpu_variant=os.environ.get(ENV_CPU_VARIANT, "").strip() or DEFAULT_CPU_VARIANT,
    )
