"""Reading text files line by line, streamed, with clear errors.

Files may be gzip-compressed (a ``.gz`` suffix). Lines are decoded as UTF-8 one at a time, so a
multi-GB file is never held in memory and a bad byte is reported with its line number.
"""

from __future__ import annotations

import contextlib
import gzip
import sys
from pathlib import Path
from typing import IO, Iterator

from ..errors import UserInputError


def open_binary(path: str | Path, stdin: IO[bytes] | None = None) -> IO[bytes]:
    """Open ``path`` for reading bytes, through gzip when it ends in ``.gz``.

    ``-`` is ``stdin`` (default: the process's standard input); named pipes, ``/dev/stdin`` and
    ``<(cmd)`` are read as they stream. Raises ``UserInputError`` when the file does not exist,
    is a directory, or cannot be opened.
    """
    if str(path) == "-":
        return stdin if stdin is not None else sys.stdin.buffer
    p = Path(path)
    check_input(p)
    try:
        return gzip.open(p, "rb") if p.suffix == ".gz" else open(p, "rb")
    except OSError as exc:
        raise UserInputError(f"{p} could not be opened: {exc.strerror or exc}; check the file") from None


def check_input(path: str | Path) -> None:
    """Raise ``UserInputError`` unless ``path`` can be opened for reading as an input: ``-``
    (stdin), a file, or a pipe (a FIFO, ``/dev/stdin``, ``<(cmd)``). Opens nothing, so a pipe
    is still whole for the reader that comes after."""
    if str(path) == "-":
        return
    p = Path(path)
    if p.is_dir():
        raise UserInputError(f"{p} is a directory; pass a file")
    if not p.exists():
        raise UserInputError(f"{p} does not exist; check the path")


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line number from 1, line without its line ending)`` for every line of ``path``.

    Raises ``UserInputError`` for a missing file, a line that is not UTF-8, or a corrupt gzip file.
    A UTF-8 byte-order mark before the first line is dropped.
    """
    f = open_binary(path)
    with contextlib.nullcontext(f) if f is sys.stdin.buffer else f:
        n = 0
        try:
            for n, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise UserInputError(
                        f"{path} line {n} is not valid UTF-8 (byte {exc.start}); convert the file first, "
                        "e.g. `iconv -f latin1 -t utf-8`"
                    ) from None
                if n == 1:
                    line = line.removeprefix("\ufeff")  # a UTF-8 byte-order mark
                yield n, line.rstrip("\r\n")
        except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
            raise UserInputError(f"{path} could not be read after line {n}: {exc}; check the file") from None
