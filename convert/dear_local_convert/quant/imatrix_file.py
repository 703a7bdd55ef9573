"""Importance-matrix files: the GGUF layout ``llama-imatrix`` writes, and its hand-off to the quantizer.

The format is llama.cpp's GGUF imatrix (not the legacy ``.dat``), as written by
``tools/imatrix/imatrix.cpp`` and read by ``llama-quantize --imatrix``:

- key ``general.type = "imatrix"`` and no ``general.architecture``;
- ``imatrix.datasets`` (array of strings), ``imatrix.chunk_count`` and
  ``imatrix.chunk_size`` (uint32); llama-quantize refuses a GGUF imatrix without
  all three;
- per weight tensor ``<name>.in_sum2``: F32, one row of ``n_per_row`` values,
  the sum over tokens of each input column's squared activation;
- per weight tensor ``<name>.counts``: F32, one value, the number of tokens
  summed. The importance of column ``j`` is ``in_sum2[j] / counts``.

dear-local adds one key, ``dear_local.calibration``: a JSON object naming the
calibration slice (name, sha256, cut, a hash of every query text), the profile
and the model the matrix was collected from. llama.cpp ignores it. Quantizing
copies it, with the file's sha256, into ``manifest.json``.

``imatrix.chunk_count`` is the number of prompt windows ranked, and
``imatrix.chunk_size`` their mean length in tokens (llama-imatrix uses fixed
chunks of text; here every window is one chunk).
"""

from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dear_local.errors import UserInputError
from dear_local.fileio import atomic_path, refuse_overwrite, sha256_file

KEY_CALIBRATION = "dear_local.calibration"
SUM2 = ".in_sum2"
COUNTS = ".counts"

# llama_model_kv_override tags (include/llama.h).
_KV_INT, _KV_STR = 0, 3


@dataclass
class Imatrix:
    """Per GGUF weight tensor: the column sums of squared inputs and the token count."""

    sums: dict[str, np.ndarray]
    counts: dict[str, int]
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    calibration: dict = field(default_factory=dict)

    def means(self) -> dict[str, np.ndarray]:
        """What the quantizer uses: per input column, the mean of x² over tokens (float32)."""
        return {
            name: (s / self.counts[name]).astype(np.float32) if self.counts[name] > 0 else np.ones_like(s, np.float32)
            for name, s in self.sums.items()
        }


def _new_writer(path: Path):
    """A gguf.GGUFWriter that writes no ``general.architecture``: imatrix files carry none."""
    import gguf

    class ImatrixWriter(gguf.GGUFWriter):
        def add_architecture(self) -> None:
            pass

    return ImatrixWriter(path, arch="")


def write_imatrix(imatrix: Imatrix, out: str | Path, *, force: bool = False) -> Path:
    """Write ``imatrix`` as a GGUF imatrix file, atomically (``.partial`` then rename)."""
    import gguf

    out = Path(out)
    refuse_overwrite(out, force)
    if not imatrix.sums:
        raise UserInputError("the importance matrix is empty: no Linear layer saw any token")
    with atomic_path(out) as tmp:
        w = _new_writer(tmp)
        w.add_type(gguf.GGUFType.IMATRIX)
        w.add_array(gguf.Keys.IMatrix.DATASETS, list(imatrix.datasets) or ["dear-local"])
        w.add_uint32(gguf.Keys.IMatrix.CHUNK_COUNT, int(imatrix.chunk_count))
        w.add_uint32(gguf.Keys.IMatrix.CHUNK_SIZE, int(imatrix.chunk_size))
        w.add_string(KEY_CALIBRATION, json.dumps(imatrix.calibration, sort_keys=True))
        for name in sorted(imatrix.sums):  # deterministic order, as llama-imatrix writes
            s = np.asarray(imatrix.sums[name], dtype=np.float32).reshape(1, -1)
            w.add_tensor(name + SUM2, s)
            w.add_tensor(name + COUNTS, np.array([[float(imatrix.counts[name])]], dtype=np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return out


def read_imatrix(path: str | Path) -> Imatrix:
    """Read a GGUF imatrix file (ours or llama-imatrix's); refuse anything else with a clear message."""
    import gguf

    path = Path(path).expanduser()
    if not path.is_file():
        raise UserInputError(f"importance matrix {path} does not exist; make one with `dear-local imatrix`")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise UserInputError(
            f"{path} is not a GGUF imatrix file (the legacy .dat format is not read); "
            "make one with `dear-local imatrix`, or convert it with llama.cpp's llama-imatrix"
        )
    try:
        r = gguf.GGUFReader(path)
    except (ValueError, OSError) as exc:
        raise UserInputError(f"{path} is a damaged GGUF file ({exc}); make the matrix again") from exc

    def value(key):
        f = r.fields.get(key)
        return None if f is None else f.contents()

    if value(gguf.Keys.General.TYPE) != gguf.GGUFType.IMATRIX:
        raise UserInputError(
            f"{path} is a GGUF file but not an importance matrix (general.type is "
            f"{value(gguf.Keys.General.TYPE)!r}); pass the file `dear-local imatrix` wrote"
        )
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for t in r.tensors:
        if t.name.endswith(SUM2):
            sums[t.name[: -len(SUM2)]] = np.asarray(t.data, dtype=np.float64).reshape(-1)
        elif t.name.endswith(COUNTS):
            c = np.asarray(t.data).reshape(-1)
            if c.size != 1:
                raise UserInputError(
                    f"{path}: {t.name} holds {c.size} counts (a mixture-of-experts matrix); "
                    "dear-local handles dense Llama models only"
                )
            counts[t.name[: -len(COUNTS)]] = int(round(float(c[0])))
    unpaired = sorted(set(sums) ^ set(counts))
    if unpaired:
        raise UserInputError(f"{path}: in_sum2 and counts do not pair up for {unpaired[:3]}; make the matrix again")
    calibration = value(KEY_CALIBRATION)
    return Imatrix(
        sums=sums,
        counts=counts,
        datasets=list(value(gguf.Keys.IMatrix.DATASETS) or []),
        chunk_count=int(value(gguf.Keys.IMatrix.CHUNK_COUNT) or 0),
        chunk_size=int(value(gguf.Keys.IMatrix.CHUNK_SIZE) or 0),
        calibration=json.loads(calibration) if calibration else {},
    )


def load_means(path: str | Path) -> dict[str, np.ndarray]:
    """``{tensor name: mean of x² per input column}``, as llama-quantize computes it from the file."""
    return read_imatrix(path).means()


# -- hand-off to llama_model_quantize ---------------------------------------------------------


class QuantizeMatrix:
    """An imatrix file checked against a GGUF and laid out as ``llama_model_quantize_params`` wants it.

    ``imatrix`` is a ctypes array of ``llama_model_imatrix_data{name, data, size}``
    ending in an all-NULL entry, as llama-quantize builds it; ``kv_overrides``
    records the matrix in the quantized file's metadata under the keys
    llama-quantize uses (``quantize.imatrix.*``). The object owns every buffer
    the pointers refer to: keep it alive until llama_model_quantize returns.
    """

    def __init__(self, path: str | Path, model_gguf: str | Path) -> None:
        import llama_cpp

        self.path = Path(path).expanduser()
        matrix = read_imatrix(self.path)
        self.calibration = matrix.calibration
        self.sha256 = sha256_file(self.path)
        means = matrix.means()
        _check_fits(means, self.path, Path(model_gguf))
        self._names = [n.encode() for n in sorted(means)]
        self._data = [np.ascontiguousarray(means[n.decode()], dtype=np.float32) for n in self._names]
        arr = (llama_cpp.llama_model_imatrix_data * (len(self._names) + 1))()
        for i, (name, data) in enumerate(zip(self._names, self._data)):
            arr[i].name = name
            arr[i].data = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            arr[i].size = data.size
        arr[len(self._names)].name = None  # terminator: llama.cpp stops at the first NULL name
        arr[len(self._names)].data = None
        arr[len(self._names)].size = 0
        self.imatrix = arr
        self.kv_overrides = self._kv(matrix, len(self._names))

    def _kv(self, matrix: Imatrix, n_entries: int):
        import llama_cpp

        dataset = ", ".join(matrix.datasets)
        items = [
            ("quantize.imatrix.file", _KV_STR, self.path.name),
            ("quantize.imatrix.dataset", _KV_STR, dataset),
            ("quantize.imatrix.entries_count", _KV_INT, n_entries),
            ("quantize.imatrix.chunks_count", _KV_INT, matrix.chunk_count),
        ]
        arr = (llama_cpp.llama_model_kv_override * (len(items) + 1))()
        for kv, (key, tag, val) in zip(arr, items):
            kv.key = key.encode()
            kv.tag = tag
            if tag == _KV_STR:
                kv.value.val_str = str(val).encode()[:127]
            else:
                kv.value.val_i64 = int(val)
        arr[len(items)].key = b""  # terminator: an empty key
        return arr

    def manifest_entry(self) -> dict:
        """What manifest.json records about the matrix a file was quantized with."""
        cal = self.calibration
        return {
            "file": self.path.name,
            "sha256": self.sha256,
            "slice": cal.get("slice"),
            "slice_sha256": cal.get("slice_sha256"),
            "queries": cal.get("queries"),
            "passages": cal.get("passages"),
            "profile": cal.get("profile"),
        }


def _check_fits(means: dict[str, np.ndarray], path: Path, model_gguf: Path) -> None:
    """Refuse a matrix made for another model: unknown tensor names or wrong row lengths."""
    rows = row_lengths(model_gguf)
    unknown = [n for n in means if n not in rows]
    if unknown:
        raise UserInputError(
            f"{path.name} has entries for tensors {model_gguf.name} lacks ({', '.join(sorted(unknown)[:3])}); "
            "it was made for another model: make the matrix from this model's checkpoint"
        )
    for name, m in means.items():
        if m.size != rows[name]:
            raise UserInputError(
                f"{path.name} gives {name} {m.size} values but its rows hold {rows[name]}; "
                "the matrix was made for another model: make it from this model's checkpoint"
            )


class _GgufInitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.POINTER(ctypes.c_void_p))]


def _ggml_base():
    """llama.cpp's ggml-base library, as bundled with llama-cpp-python (OSError where it is named otherwise)."""
    import llama_cpp

    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    vp, i64 = ctypes.c_void_p, ctypes.c_int64
    for fn, res, args in (
        ("gguf_init_from_file", vp, [ctypes.c_char_p, _GgufInitParams]),
        ("gguf_free", None, [vp]),
        ("ggml_free", None, [vp]),
        ("ggml_get_first_tensor", vp, [vp]),
        ("ggml_get_next_tensor", vp, [vp, vp]),
        ("ggml_get_name", ctypes.c_char_p, [vp]),
        ("ggml_nelements", i64, [vp]),
        ("ggml_nrows", i64, [vp]),
    ):
        getattr(lib, fn).restype = res
        getattr(lib, fn).argtypes = args
    return lib


def row_lengths(model_gguf: str | Path) -> dict[str, int]:
    """``{tensor name: row length (ne0)}`` of a GGUF file, read from its header only.

    It goes through llama.cpp's own GGUF reader: gguf-py's reader parses every
    vocabulary string first, which takes many seconds for a Llama-3 vocabulary.
    """
    path = Path(model_gguf)
    try:
        lib = _ggml_base()
    except (OSError, AttributeError):
        import gguf

        return {t.name: int(t.shape[0]) for t in gguf.GGUFReader(path).tensors}
    ctx = ctypes.c_void_p()
    g = lib.gguf_init_from_file(str(path).encode(), _GgufInitParams(True, ctypes.pointer(ctx)))
    if not g:
        raise UserInputError(f"{path} is not a readable GGUF file; pass the BF16/F16/F32 GGUF to quantize")
    try:
        out = {}
        t = lib.ggml_get_first_tensor(ctx)
        while t:
            out[lib.ggml_get_name(t).decode()] = lib.ggml_nelements(t) // max(lib.ggml_nrows(t), 1)
            t = lib.ggml_get_next_tensor(ctx, t)
        return out
    finally:
        lib.gguf_free(g)
        lib.ggml_free(ctx)
