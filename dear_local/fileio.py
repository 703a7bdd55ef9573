"""Atomic file writing, checksums and pinned downloads.

Everything dear-local writes goes to ``<name>.partial`` (``.incomplete`` for
downloads) first and is renamed into place only when complete, so a crash
or Ctrl-C never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import sys
import urllib.request
from pathlib import Path
from typing import Iterator

from .errors import DearLocalError, DiskFullError, DownloadError, OfflineError, UserInputError
from .settings import get_settings

CHUNK = 1 << 20
# errno values that mean "the disk (or the user's quota on it) is full"
NO_SPACE = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


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


def refuse_output_file(path: Path, force: bool, option: str = "--out") -> None:
    """Refuse an output file path that cannot be written in place, before any work is done.

    Raises:
        UserInputError: ``path`` is a directory or another non-regular file (a device, a pipe),
            even with ``force``; or a file that exists while ``force`` is not set.
    """
    if path.is_dir():
        raise UserInputError(f"{path} is a directory; {option} takes a file path, such as {path / 'run.trec'}")
    if path.exists() and not path.is_file():
        raise UserInputError(
            f"{path} is not a regular file; pass a file path to {option} (leave {option} out to write to standard output)"
        )
    refuse_overwrite(path, force)


def _disk_of(path: str | Path) -> str:
    """The mount point of the file system ``path`` is on, and its free space, as words."""
    path = str(path)
    if path.startswith("standard output"):
        path = path[len("standard output ("):-1] if path.endswith(")") else "/proc/self/fd/1"
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    mount = p
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    try:
        free = shutil.disk_usage(mount).free
    except OSError:
        return f"the disk mounted at {mount}"
    return f"the disk mounted at {mount} ({free / 2**20:.0f} MiB free)"


def disk_full_error(path: str | Path, exc: OSError, hint: str = "free some space, or write somewhere else") -> DiskFullError:
    """The one-line error for ``exc`` (ENOSPC or EDQUOT) while writing ``path``."""
    what = "no space left" if exc.errno == errno.ENOSPC else (exc.strerror or "no space left").lower()
    return DiskFullError(f"{what} on {_disk_of(path)} while writing {path}; {hint}")


@contextlib.contextmanager
def write_errors(path: str | Path, hint: str = "free some space, or write somewhere else") -> Iterator[None]:
    """Turn an ``OSError`` raised while writing ``path`` into one line naming the file and the fix.

    Raises:
        DiskFullError: the disk or the quota is full (ENOSPC, EDQUOT); names the disk, its free space
            and ``hint`` (what to do).
        UserInputError: any other ``OSError`` (permissions, a read-only file system, a directory in the way).
    """
    try:
        yield
    except (DearLocalError, BrokenPipeError):  # a closed pipe is the reader's choice, not a write error
        raise
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise disk_full_error(path, exc, hint) from None
        raise UserInputError(f"cannot write {path} ({exc.strerror or exc}); check the path and its permissions") from None


def stdout_name() -> str:
    """Standard output as named in messages, with the file it goes to where the system tells."""
    try:
        target = os.readlink("/proc/self/fd/1")
    except OSError:
        return "standard output"
    return f"standard output ({target})" if target.startswith("/") else "standard output"


@contextlib.contextmanager
def stdout_errors(hint: str) -> Iterator[None]:
    """``write_errors`` for standard output. After a failed write, standard output is pointed at
    the null device, so the interpreter's last flush at exit does not print the error again.
    When standard output is not a regular file (a device such as ``/dev/full``, a pipe), a full
    write names standard output alone, not the free space of whatever disk its path is on."""
    import stat

    name = stdout_name()
    try:
        regular = stat.S_ISREG(os.fstat(sys.stdout.fileno()).st_mode)
    except (OSError, ValueError, AttributeError):
        regular = False
    try:
        if regular:
            with write_errors(name, hint):
                yield
        else:
            try:
                yield
            except OSError as exc:
                if isinstance(exc, BrokenPipeError) or exc.errno not in NO_SPACE:
                    raise
                raise DiskFullError(f"{name} is full (no space left on device); {hint}") from None
    except DearLocalError:
        with contextlib.suppress(OSError, ValueError):
            fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(fd, sys.stdout.fileno())
            os.close(fd)
        raise


def check_writable(folder: str | Path, *, option: str = "--out", target: str | Path | None = None) -> None:
    """Make ``folder`` if needed, and refuse one that cannot be written.

    Raises:
        UserInputError: naming ``target`` (default: the folder), the reason, and ``option`` to change.
        DiskFullError: the disk holding ``folder`` has no room left (not even for a new file).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        if exc.errno in NO_SPACE:
            shown = target if target is not None else folder
            raise disk_full_error(shown, exc, f"free some space, or choose another {option}") from None
        shown = f"write {target}" if target is not None else f"write to {folder}"
        raise UserInputError(f"cannot {shown} ({exc.strerror or exc}); choose a writable {option}") from None


@contextlib.contextmanager
def atomic_path(final: str | Path, suffix: str = ".partial") -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it into place on success.

    On any exception the temporary file is removed and ``final`` is untouched; a full disk
    (ENOSPC, EDQUOT) is raised as ``DiskFullError`` naming the disk. A ``final`` that is a
    symbolic link is written through: its target gets the new file, the link stays.
    """
    final = Path(os.path.realpath(Path(final).expanduser()))
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + suffix)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, DearLocalError) and exc.errno in NO_SPACE:
            raise disk_full_error(final, exc) from None
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
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, DearLocalError) and exc.errno in NO_SPACE:
            raise disk_full_error(final, exc) from None
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
    except DiskFullError:
        raise
    except OSError as exc:
        raise DownloadError(f"could not download {url}: {exc}; check your network and retry") from exc
    return dest
