"""Atomic file writing, checksums and pinned downloads.

Everything dear-local writes goes to ``<name>.partial`` (``.incomplete`` for
downloads) first and is renamed into place only when complete, so a crash
or Ctrl-C never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import urllib.request
from pathlib import Path
from typing import Iterator

from .errors import DownloadError, OfflineError, UserInputError
from .settings import get_settings

CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def refuse_overwrite(path: Path, force: bool) -> None:
    """Raise unless ``path`` is free or ``force`` is set."""
    if path.exists() and not force:
        raise UserInputError(f"{path} already exists; pass --force to overwrite it")


def check_writable(folder: str | Path, *, option: str = "--out", target: str | Path | None = None) -> None:
    """Make ``folder`` if needed, and refuse one that cannot be written.

    Raises:
        UserInputError: naming ``target`` (default: the folder), the reason, and ``option`` to change.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        shown = f"write {target}" if target is not None else f"write to {folder}"
        raise UserInputError(f"cannot {shown} ({exc.strerror or exc}); choose a writable {option}") from None


@contextlib.contextmanager
def atomic_path(final: str | Path, suffix: str = ".partial") -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it into place on success.

    On any exception the temporary file is removed and ``final`` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + suffix)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(final: str | Path, suffix: str = ".partial") -> Iterator[Path]:
    """Yield an empty temporary directory next to ``final``; on success it replaces ``final``.

    A leftover temporary directory from an earlier crash is cleared first. On any
    exception the temporary directory is removed and ``final`` is untouched.
    """
    final = Path(final)
    tmp = final.with_name(final.name + suffix)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text_atomic(final: str | Path, text: str) -> Path:
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(final)


def download(url: str, dest: str | Path, sha256: str | None, *, desc: str | None = None) -> Path:
    """Fetch ``url`` to ``dest`` through ``dest.incomplete``, checking its sha256."""
    settings = get_settings()
    dest = Path(dest)
    if settings.offline:
        raise OfflineError(
            f"{dest.name} is not downloaded and offline mode is on (HF_HUB_OFFLINE or "
            f"DEAR_LOCAL_OFFLINE); unset it to download from {url}"
        )
    from .progress import bar

    h = hashlib.sha256()
    try:
        with atomic_path(dest, ".incomplete") as tmp:
            req = urllib.request.Request(url, headers={"User-Agent": "dear-local"})
            with urllib.request.urlopen(req, timeout=60) as resp, open(tmp, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0) or None
                with bar(total=total, desc=desc or dest.name, unit="B") as pbar:
                    for block in iter(lambda: resp.read(CHUNK), b""):
                        out.write(block)
                        h.update(block)
                        pbar.update(len(block))
            if sha256 and h.hexdigest() != sha256:
                raise DownloadError(
                    f"checksum mismatch for {url}: expected {sha256}, got {h.hexdigest()}; "
                    "the file may have changed upstream or the download was corrupted, try again"
                )
    except OSError as exc:
        raise DownloadError(f"could not download {url}: {exc}; check your network and retry") from exc
    return dest
