"""Check that a file is a whole GGUF before llama.cpp opens it: header, metadata, tensor table and size.

llama.cpp reports a damaged file in many ways (a refused load, an exception from
a C++ stream, sometimes a crash). Reading the GGUF's own table of contents in
Python first turns every such file into one :class:`InvalidModelFileError` that
says what is wrong and what to do: a file shorter than its tensor data
(truncated download or copy), an empty file, wrong magic, a folder, an
unknown GGUF version, or a table of contents that runs past the end.

Nothing here needs the ``gguf`` package, so the runtime can use it.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidModelFileError, ModelNotFoundError

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# ggml_type id -> (elements per block, bytes per block), from ggml/src/ggml.c's type_traits.
GGML_TYPE_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 36),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110),
    22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
    29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18),
}  # fmt: skip

# GGUF metadata value types: fixed-size ones as struct codes; 8 = string, 9 = array.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GGUFSummary:
    """What the check read: GGUF ``version``, ``n_tensors``, ``architecture`` (or None),
    ``data_end`` (bytes the tensors need, from the file's start) and ``size`` (the file's bytes)."""

    version: int
    n_tensors: int
    architecture: str | None
    data_end: int
    size: int


class _Truncated(Exception):
    pass


class _Corrupt(Exception):
    pass


class _Reader:
    def __init__(self, buf, size: int):
        self.buf, self.size, self.pos = buf, size, 0

    def take(self, n: int) -> int:
        if n < 0 or self.pos + n > self.size:
            raise _Truncated
        start = self.pos
        self.pos += n
        return start

    def unpack(self, code: str):
        n = struct.calcsize("<" + code)
        return struct.unpack_from("<" + code, self.buf, self.take(n))[0]

    def string(self) -> bytes:
        n = self.unpack("Q")
        start = self.take(n)
        return bytes(self.buf[start : start + n])

    def skip_value(self, vtype: int):
        """Read one metadata value; return it for scalars and strings, None for arrays."""
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = self.unpack("I"), self.unpack("Q")
            if etype in _SCALARS:
                self.take(count * struct.calcsize("<" + _SCALARS[etype]))
            elif etype == _STRING:
                for _ in range(count):
                    self.take(self.unpack("Q"))
            else:  # nested arrays are not written by any GGUF writer
                raise _Corrupt(f"an array of value type {etype}")
            return None
        raise _Corrupt(f"unknown metadata value type {vtype}")


_FIX = "re-download it (`dear-local pull`) or re-convert it (`dear-local convert`)"


def check_gguf(path: str | Path, *, what: str = "model file") -> GGUFSummary:
    """Read ``path``'s GGUF header, metadata and tensor table; check the file holds every tensor's bytes.

    ``what`` names the file in messages (``"model file"``, ``"input GGUF"``).

    Raises:
        ModelNotFoundError: ``path`` does not exist.
        InvalidModelFileError: a folder, an empty file, not a GGUF (wrong magic), an
            unknown GGUF version, a table of contents that is corrupt or runs past the end,
            or a file shorter than its tensor data (truncated); the message names the fix.
    """
    path = Path(path)
    if not path.exists():
        raise ModelNotFoundError(f"{what} {path} does not exist; check the path")
    if path.is_dir():
        raise InvalidModelFileError(f"{what} {path} is a folder, not a GGUF file; pass the .gguf file inside it")
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise InvalidModelFileError(
            f"{what} {path} cannot be read ({exc.strerror or exc}); check its permissions"
        ) from None
    with f:
        size = _file_size(f)
        if size == 0:
            raise InvalidModelFileError(f"{what} {path} is empty (0 bytes); {_FIX}")
        if f.read(4) != MAGIC:
            raise InvalidModelFileError(
                f"{what} {path} is not a GGUF file (it does not start with 'GGUF'); "
                "convert a checkpoint with `dear-local convert` or download one with `dear-local pull`"
            )
        try:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # not mappable (a pipe, a special file)
            f.seek(0)
            buf = f.read()
        try:
            return _summary(path, buf, size, what)
        finally:
            if isinstance(buf, mmap.mmap):
                buf.close()


def _file_size(f) -> int:
    f.seek(0, 2)
    size = f.tell()
    f.seek(0)
    return size


def _summary(path: Path, buf, size: int, what: str) -> GGUFSummary:
    r = _Reader(buf, size)
    try:
        r.take(4)
        version = r.unpack("I")
        if version not in (2, 3):
            raise InvalidModelFileError(
                f"{what} {path} has GGUF version {version}, which this llama.cpp does not read "
                f"(it reads versions 2 and 3); {_FIX}"
            )
        n_tensors, n_kv = r.unpack("Q"), r.unpack("Q")
        arch, alignment = None, DEFAULT_ALIGNMENT
        for _ in range(n_kv):
            key = r.string()
            value = r.skip_value(r.unpack("I"))
            if key == b"general.architecture" and isinstance(value, bytes):
                arch = value.decode("utf-8", "replace")
            elif key == b"general.alignment" and isinstance(value, int):
                if value <= 0 or value & (value - 1):
                    raise _Corrupt(f"general.alignment {value} is not a power of two")
                alignment = value
        tensors = []
        for _ in range(n_tensors):
            name = r.string()
            n_dims = r.unpack("I")
            if n_dims > 8:
                raise _Corrupt(f"tensor {name[:64]!r} has {n_dims} dimensions")
            dims = [r.unpack("Q") for _ in range(n_dims)]
            tensors.append((name, dims, r.unpack("I"), r.unpack("Q")))
    except _Truncated:
        raise InvalidModelFileError(
            f"{what} {path} is truncated: it ends inside its header ({size} bytes); {_FIX}"
        ) from None
    except _Corrupt as exc:
        raise InvalidModelFileError(f"{what} {path} is corrupt ({exc}); {_FIX}") from None
    data_start = -(-r.pos // alignment) * alignment
    data_end = r.pos  # a file without tensors (a vocab-only GGUF) needs no padding after its metadata
    for name, dims, ggml_type, offset in tensors:
        n = 1
        for d in dims:
            n *= d
        block, block_bytes = GGML_TYPE_SIZES.get(ggml_type, (1, 0))  # an unknown type: check its offset only
        end = data_start + offset + (n // block) * block_bytes
        data_end = max(data_end, end)
    if data_end > size:
        raise InvalidModelFileError(
            f"{what} {path} is truncated: its tensors need {data_end:,} bytes but the file has {size:,}; {_FIX}"
        )
    return GGUFSummary(version, len(tensors), arch, data_end, size)
