"""Templates as data: the TOML files a package folder holds, each read into a record by its ``name``."""

from __future__ import annotations

import sys
from importlib import resources
from typing import Callable, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")


def load_folder(package: str, make: Callable[..., T]) -> dict[str, T]:
    """Every ``*.toml`` directly in ``package`` (a dotted package name), in file-name order, as
    ``{data["name"]: make(**data)}``. A file with a key ``make`` does not take raises its TypeError."""
    files = sorted((f for f in resources.files(package).iterdir() if f.name.endswith(".toml")), key=lambda f: f.name)
    out: dict[str, T] = {}
    for f in files:
        data = tomllib.loads(f.read_text(encoding="utf-8"))
        out[data["name"]] = make(**data)
    return out
