"""Templates as data: the TOML files a package folder holds, each read into a record by its ``name``."""

from __future__ import annotations

import sys
from importlib import resources
from threading import Lock
from typing import Callable, Generic, TypeVar

from ..errors import UnknownTemplateError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")


class DataFolder(Generic[T]):
    """Every ``*.toml`` directly in ``package`` (a dotted package name), read once on first use, in
    file-name order, as ``{data["name"]: make(**data)}``; ``what`` names them in errors and ``hint``
    ends the unknown-name message. A file with a key ``make`` does not take raises its TypeError."""

    def __init__(self, package: str, make: Callable[..., T], what: str, hint: str = "") -> None:
        self.package, self.make, self.what, self.hint = package, make, what, hint
        self._records: dict[str, T] | None = None
        self._lock = Lock()

    def records(self) -> dict[str, T]:
        with self._lock:
            if self._records is None:
                files = sorted((f for f in resources.files(self.package).iterdir() if f.name.endswith(".toml")),
                               key=lambda f: f.name)
                records: dict[str, T] = {}
                for f in files:
                    data = tomllib.loads(f.read_text(encoding="utf-8"))
                    records[data["name"]] = self.make(**data)
                self._records = records
            return self._records

    def get(self, name: str) -> T:
        """The record called ``name``.

        Raises:
            UnknownTemplateError: no such record; the message lists the known ones.
        """
        records = self.records()
        if name not in records:
            raise UnknownTemplateError(f"unknown {self.what} {name!r}; choose one of: {', '.join(records)}{self.hint}")
        return records[name]
