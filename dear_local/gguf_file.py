"""The GGUF file format in pure Python: the magic, dear-local's metadata keys, one header reader and the file check.

- :data:`MAGIC` and :func:`has_gguf_magic`: the four bytes every GGUF starts with.
- :class:`Keys`: every ``dear_local.*`` metadata key the converter, the LoRA tools and
  the importance-matrix writer record, in one place.
- :func:`read_header`: the version, the metadata key/values and the tensor table
  (name, shape, ggml type, offset) of a GGUF file, without reading tensor data.
  Arrays (a Llama-3 vocabulary is 128k tokens and 280k merges) are stepped over
  unless asked for, so a header is read in a fraction of a second.
- :func:`check_gguf`: the header plus a check that the file holds every tensor's bytes.

llama.cpp reports a damaged file in many ways (a refused load, an exception from
a C++ stream, sometimes a crash). Reading the GGUF's own table of contents in
Python first turns every such file into one :class:`InvalidModelFileError` that
says what is wrong and what to do: a file shorter than its tensor data
(truncated download or copy), an empty file, wrong magic, a folder, an
unknown GGUF version, or a table of contents that runs past the end.

The layout is GGUF versions 2 and 3 as ggml/docs/gguf.md gives it, little-endian.
Nothing here needs the ``gguf`` package, so the runtime can use it.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection

from .errors import InvalidModelFileError, ModelNotFoundError

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32


class Keys:
    """The ``dear_local.*`` GGUF metadata keys: what dear-local records in the files it writes.

    llama.cpp ignores them. Every value is a string except :attr:`POINTWISE_HEAD`, an array of float32.
    """

    VERSION = "dear_local.version"
    """The dear-local version that wrote the file (models, merged models, adapters)."""
    SOURCE_REPO = "dear_local.source.repo"
    """The Hugging Face repo (or local path) of the converted checkpoint; quantizing copies it to manifest.json."""
    SOURCE_REVISION = "dear_local.source.revision"
    """That checkpoint's revision."""
    LORA_REPO = "dear_local.lora.repo"
    """A LoRA adapter's repo (or local path), in a merged model and in a GGUF adapter."""
    LORA_REVISION = "dear_local.lora.revision"
    """That adapter's revision."""
    LORA_SHA256 = "dear_local.lora.sha256"
    """The sha256 of the PEFT adapter's ``adapter_model.safetensors``."""
    LORA_BASE_MODEL = "dear_local.lora.base_model"
    """The PEFT adapter's ``base_model_name_or_path``."""
    LORA_BASE_GGUF = "dear_local.lora.base_gguf"
    """In a GGUF adapter: the ``general.name`` of the base GGUF it was converted against."""
    CALIBRATION = "dear_local.calibration"
    """In an importance matrix: JSON naming the calibration slice, profile and model."""
    KIND = "dear_local.kind"
    """``"pointwise"`` in a pointwise ranker (DeAR-P); absent in a listwise model."""
    POINTWISE_TEMPLATE = "dear_local.pointwise.template"
    """The pointwise input template's name (``dear_local/templates/pointwise/<name>.toml``)."""
    POINTWISE_HEAD = "dear_local.pointwise.head"
    """The score head's weights, ``n_embd`` float32 values (HF's ``score.weight``, one label, no bias):
    the score is their dot product with the last token's hidden state. Quantizing copies it unchanged."""


POINTWISE = "pointwise"  # the value of Keys.KIND in a pointwise ranker


# ggml_type id -> (elements per block, bytes per block), from ggml/src/ggml.c's type_traits.
GGML_TYPE_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 36),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110),
    22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
    29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18),
}  # fmt: skip

# GGUF metadata value types (gguf_type): fixed-size ones as struct codes; 8 = string, 9 = array.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")


def has_gguf_magic(path: str | Path) -> bool:
    """True when the file at ``path`` starts with the GGUF magic (``b"GGUF"``).

    Raises:
        OSError: the file cannot be opened.
    """
    with open(path, "rb") as f:
        return f.read(4) == MAGIC


@dataclass(frozen=True)
class GGUFArray:
    """A metadata array that :func:`read_header` stepped over: its element type (gguf_type) and length."""

    element_type: int
    count: int


@dataclass(frozen=True)
class TensorInfo:
    """One entry of a GGUF's tensor table.

    ``shape`` is in ggml order, the row length (ne0) first, as gguf-py's
    ``ReaderTensor.shape``; numpy's order is the reverse. ``ggml_type`` is the
    ``ggml_type`` id (0 F32, 1 F16, 30 BF16, ...), and ``offset`` is in bytes from the
    start of the tensor data (:attr:`GGUFHeader.data_offset`).
    """

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def n_bytes(self) -> int:
        """Bytes of tensor data. Raises ValueError for a ggml type this table does not know."""
        try:
            block, block_bytes = GGML_TYPE_SIZES[self.ggml_type]
        except KeyError:
            raise ValueError(f"tensor {self.name!r} has unknown ggml type {self.ggml_type}") from None
        return self.n_elements // block * block_bytes


@dataclass(frozen=True)
class GGUFHeader:
    """What :func:`read_header` read: everything before the tensor data.

    ``metadata`` maps each key to an int, float, bool or str, or, for an array, to a
    list of those (when asked for) or a :class:`GGUFArray`. ``data_offset`` is where
    the tensor data starts (the header's end rounded up to ``alignment``), ``header_end``
    where the tensor table ends, ``size`` the file's bytes.
    """

    path: Path
    version: int
    metadata: dict[str, object]
    tensors: tuple[TensorInfo, ...]
    alignment: int
    header_end: int
    data_offset: int
    size: int = field(repr=False)

    def get(self, key: str, default=None):
        """The value of metadata ``key``, or ``default``."""
        return self.metadata.get(key, default)

    @property
    def architecture(self) -> str | None:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None

    @property
    def data_end(self) -> int:
        """Bytes the file needs, from its start: the end of the last tensor's data (for an unknown
        ggml type, its offset), or the header's end when there are no tensors."""
        end = self.header_end  # a file without tensors (a vocab-only GGUF) needs no padding after its metadata
        for t in self.tensors:
            block, block_bytes = GGML_TYPE_SIZES.get(t.ggml_type, (1, 0))
            end = max(end, self.data_offset + t.offset + t.n_elements // block * block_bytes)
        return end


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

    def u32(self) -> int:
        return _U32.unpack_from(self.buf, self.take(4))[0]

    def u64(self) -> int:
        return _U64.unpack_from(self.buf, self.take(8))[0]

    def string(self) -> str:
        n = self.u64()
        start = self.take(n)
        return bytes(self.buf[start : start + n]).decode("utf-8", "replace")

    def value(self, vtype: int, keep_array: bool):
        """Read one metadata value; an array becomes a list when ``keep_array``, else a :class:`GGUFArray`."""
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype != _ARRAY:
            raise _Corrupt(f"unknown metadata value type {vtype}")
        etype, count = self.u32(), self.u64()
        if etype in _SCALARS:
            code = _SCALARS[etype]
            start = self.take(count * struct.calcsize("<" + code))
            return list(struct.unpack_from(f"<{count}{code}", self.buf, start)) if keep_array else GGUFArray(etype, count)
        if etype != _STRING:  # nested arrays are not written by any GGUF writer
            raise _Corrupt(f"an array of value type {etype}")
        if count * 8 > self.size - self.pos:  # every string needs at least its 8-byte length
            raise _Truncated
        if keep_array:
            return [self.string() for _ in range(count)]
        buf, pos, size, unpack = self.buf, self.pos, self.size, _U64.unpack_from
        for _ in range(count):  # the hot loop of a Llama-3 header: 400k strings stepped over
            if pos + 8 > size:
                raise _Truncated
            pos += 8 + unpack(buf, pos)[0]
        if pos > size:
            raise _Truncated
        self.pos = pos
        return GGUFArray(etype, count)


_FIX = "re-download it (`dear-local pull`) or re-convert it (`dear-local convert`)"


def read_header(
    path: str | Path, *, what: str = "model file", arrays: bool | Collection[str] = False, fix: str = _FIX
) -> GGUFHeader:
    """Read ``path``'s GGUF header: version, metadata and tensor table; tensor data is not read.

    ``arrays`` says which array values to decode: ``True`` for all, or a collection
    of keys (``{"imatrix.datasets"}``); the others are :class:`GGUFArray` (type and
    length), which keeps a Llama-3 vocabulary from costing seconds. ``what`` names
    the file in messages (``"model file"``, ``"input GGUF"``); ``fix`` is the advice
    that ends a message about a damaged file.

    The tensor data is not checked: see :func:`check_gguf` for that.

    Raises:
        ModelNotFoundError: ``path`` does not exist.
        InvalidModelFileError: a folder, an unreadable or empty file, not a GGUF (wrong
            magic), an unknown GGUF version, or a table of contents that is corrupt or
            runs past the end; one line that names the fix.
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
            raise InvalidModelFileError(f"{what} {path} is empty (0 bytes); {fix}")
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
            return _parse(path, buf, size, what, arrays, fix)
        finally:
            if isinstance(buf, mmap.mmap):
                buf.close()


def _file_size(f) -> int:
    f.seek(0, 2)
    size = f.tell()
    f.seek(0)
    return size


def _parse(path: Path, buf, size: int, what: str, arrays: bool | Collection[str], fix: str) -> GGUFHeader:
    r = _Reader(buf, size)
    try:
        r.take(4)
        version = r.u32()
        if version not in (2, 3):
            raise InvalidModelFileError(
                f"{what} {path} has GGUF version {version}, which this llama.cpp does not read "
                f"(it reads versions 2 and 3); {fix}"
            )
        n_tensors, n_kv = r.u64(), r.u64()
        metadata: dict[str, object] = {}
        for _ in range(n_kv):
            key = r.string()
            metadata[key] = r.value(r.u32(), arrays is True or (bool(arrays) and key in arrays))
        alignment = metadata.get("general.alignment")
        if not isinstance(alignment, int):  # absent, or not a number: llama.cpp's default
            alignment = DEFAULT_ALIGNMENT
        elif alignment <= 0 or alignment & (alignment - 1):
            raise _Corrupt(f"general.alignment {alignment} is not a power of two")
        tensors = []
        for _ in range(n_tensors):
            name = r.string()
            n_dims = r.u32()
            if n_dims > 8:
                raise _Corrupt(f"tensor {name[:64]!r} has {n_dims} dimensions")
            shape = tuple(r.u64() for _ in range(n_dims))
            tensors.append(TensorInfo(name, shape, r.u32(), r.u64()))
    except _Truncated:
        raise InvalidModelFileError(
            f"{what} {path} is truncated: it ends inside its header ({size} bytes); {fix}"
        ) from None
    except _Corrupt as exc:
        raise InvalidModelFileError(f"{what} {path} is corrupt ({exc}); {fix}") from None
    data_offset = -(-r.pos // alignment) * alignment
    return GGUFHeader(path, version, metadata, tuple(tensors), alignment, r.pos, data_offset, size)


def check_gguf(path: str | Path, *, what: str = "model file") -> GGUFSummary:
    """Read ``path``'s GGUF header, metadata and tensor table; check the file holds every tensor's bytes.

    ``what`` names the file in messages (``"model file"``, ``"input GGUF"``).

    Raises:
        ModelNotFoundError: ``path`` does not exist.
        InvalidModelFileError: a folder, an empty file, not a GGUF (wrong magic), an
            unknown GGUF version, a table of contents that is corrupt or runs past the end,
            or a file shorter than its tensor data (truncated); the message names the fix.
    """
    header = read_header(path, what=what)
    check_tensor_data(header, what=what)
    return GGUFSummary(header.version, len(header.tensors), header.architecture, header.data_end, header.size)


def check_tensor_data(header: GGUFHeader, *, what: str = "model file", fix: str = _FIX) -> None:
    """Raise :class:`InvalidModelFileError` when the file is shorter than the tensor data its header lists."""
    if header.data_end > header.size:
        raise InvalidModelFileError(
            f"{what} {header.path} is truncated: its tensors need {header.data_end:,} bytes "
            f"but the file has {header.size:,}; {fix}"
        )
