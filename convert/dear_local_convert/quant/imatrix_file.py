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

from dear_local.errors import InvalidModelFileError, ModelNotFoundError, UserInputError
from dear_local.fileio import atomic_path, refuse_overwrite, sha256_file
from dear_local.gguf_file import Keys, check_tensor_data, has_gguf_magic, read_header

KEY_CALIBRATION = Keys.CALIBRATION  # its first name; see dear_local.gguf_file.Keys
SUM2 = ".in_sum2"
COUNTS = ".counts"
# llama.cpp's keys (gguf-py's gguf.Keys, spelled out so reading needs no gguf package), and ggml's F32.
_TYPE, _DATASETS = "general.type", "imatrix.datasets"
_CHUNK_COUNT, _CHUNK_SIZE = "imatrix.chunk_count", "imatrix.chunk_size"
_F32 = 0

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
        w.add_string(Keys.CALIBRATION, json.dumps(imatrix.calibration, sort_keys=True))
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
    """Read a GGUF imatrix file (ours or llama-imatrix's); refuse anything else with a clear message.

    Raises:
        UserInputError: a missing file, a legacy ``.dat`` or other non-GGUF file, a damaged
            GGUF, a GGUF that is not an importance matrix, or entries that do not pair up.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserInputError(f"importance matrix {path} does not exist; make one with `dear-local imatrix`")
    if not has_gguf_magic(path):
        raise UserInputError(
            f"{path} is not a GGUF imatrix file (the legacy .dat format is not read); "
            "make one with `dear-local imatrix`, or convert it with llama.cpp's llama-imatrix"
        )
    again = "make the matrix again"
    try:
        header = read_header(path, what="importance matrix", arrays={_DATASETS}, fix=again)
        check_tensor_data(header, what="importance matrix", fix=again)
    except InvalidModelFileError as exc:
        raise UserInputError(str(exc)) from None
    if header.get(_TYPE) != "imatrix":
        raise UserInputError(
            f"{path} is a GGUF file but not an importance matrix (general.type is "
            f"{header.get(_TYPE)!r}); pass the file `dear-local imatrix` wrote"
        )
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    data = np.memmap(path, dtype=np.uint8, mode="r") if header.tensors else None
    for t in header.tensors:
        if not t.name.endswith((SUM2, COUNTS)):
            continue
        if t.ggml_type != _F32:
            raise UserInputError(f"{path}: {t.name} is not F32 (ggml type {t.ggml_type}); {again}")
        start = header.data_offset + t.offset
        values = data[start : start + 4 * t.n_elements].view("<f4")
        if t.name.endswith(SUM2):
            sums[t.name[: -len(SUM2)]] = values.astype(np.float64)
        else:
            if values.size != 1:
                raise UserInputError(
                    f"{path}: {t.name} holds {values.size} counts (a mixture-of-experts matrix); "
                    "dear-local handles dense Llama models only"
                )
            counts[t.name[: -len(COUNTS)]] = int(round(float(values[0])))
    del data
    unpaired = sorted(set(sums) ^ set(counts))
    if unpaired:
        raise UserInputError(f"{path}: in_sum2 and counts do not pair up for {unpaired[:3]}; make the matrix again")
    calibration = header.get(Keys.CALIBRATION)
    datasets = header.get(_DATASETS)
    return Imatrix(
        sums=sums,
        counts=counts,
        datasets=[str(d) for d in datasets] if isinstance(datasets, list) else [],
        chunk_count=int(header.get(_CHUNK_COUNT) or 0),
        chunk_size=int(header.get(_CHUNK_SIZE) or 0),
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


def row_lengths(model_gguf: str | Path) -> dict[str, int]:
    """``{tensor name: row length (ne0)}`` of a GGUF file, read from its header only.

    Raises:
        UserInputError: ``model_gguf`` is missing or not a readable GGUF.
    """
    path = Path(model_gguf)
    try:
        header = read_header(path, what="GGUF", fix="pass the BF16/F16/F32 GGUF to quantize")
    except (InvalidModelFileError, ModelNotFoundError) as exc:
        raise UserInputError(str(exc)) from None
    return {t.name: int(t.shape[0]) if t.shape else 1 for t in header.tensors}
