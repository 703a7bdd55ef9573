"""Quantize a GGUF file into a ladder of types with llama.cpp's quantizer, and record a manifest.

K-quants and i-quants can only be written by llama.cpp, so this goes through
``llama_cpp.llama_model_quantize``. Its parameters come from
``llama_model_quantize_default_params()`` and are set by field name, never by
position, so a reordered C struct cannot silently change their meaning.

Each output is written to ``<name>-<TYPE>.gguf.partial`` and renamed when
llama.cpp reports success. ``manifest.json`` in the output directory records,
per file: type, bytes, bits per weight, sha256, the source repo and revision
(carried in the GGUF's metadata from conversion), the dear-local version and
the llama.cpp build.
"""

from __future__ import annotations

import ctypes
import json
import re
import time
from pathlib import Path

from dear_local.errors import QuantizeError, UserInputError
from dear_local.fileio import atomic_path, check_writable, sha256_file, write_text_atomic

from dear_local_convert.to_gguf.writer import KEY_SOURCE_REPO, KEY_SOURCE_REVISION
from dear_local_convert.llama_cpp_lib import LogCapture

# llama.cpp's llama_ftype values (include/llama.h). The types in NEEDS_IMATRIX
# are refused without an importance matrix (see convert/imatrix_file.py).
FTYPES: dict[str, int] = {
    "F32": 0, "F16": 1, "BF16": 32,
    "Q8_0": 7, "Q6_K": 18,
    "Q5_K_M": 17, "Q5_K_S": 16, "Q5_1": 9, "Q5_0": 8,
    "Q4_K_M": 15, "Q4_K_S": 14, "Q4_1": 3, "Q4_0": 2, "IQ4_XS": 30, "IQ4_NL": 25,
    "Q3_K_L": 13, "Q3_K_M": 12, "Q3_K_S": 11, "IQ3_M": 27, "IQ3_S": 26, "IQ3_XS": 22, "IQ3_XXS": 23,
    "Q2_K": 10,
    "Q2_K_S": 21, "IQ2_M": 29, "IQ2_S": 28, "IQ2_XS": 20, "IQ2_XXS": 19, "IQ1_M": 31, "IQ1_S": 24,
}  # fmt: skip
NEEDS_IMATRIX = ("IQ3_M", "Q2_K_S", "IQ2_M", "IQ2_S", "IQ2_XS", "IQ2_XXS", "IQ1_M", "IQ1_S")
DEFAULT_LADDER = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "IQ4_XS", "Q3_K_M", "Q2_K")
MANIFEST = "manifest.json"
_SOURCE_SUFFIX = re.compile(r"-(BF16|F16|F32)$", re.I)
_TENSOR_LINE = re.compile(r"\[\s*(\d+)/\s*(\d+)\]")


def parse_types(types: str | list[str]) -> list[str]:
    """Normalise ``"Q8_0,q4_k_m"`` or a list into known type names; unknown names fail, listing the valid ones."""
    if isinstance(types, str):
        types = types.split(",")
    out = [t.strip().upper() for t in types if t.strip()]
    if not out:
        raise UserInputError(f"no quant types given; choose from: {', '.join(FTYPES)}")
    unknown = [t for t in out if t not in FTYPES]
    if unknown:
        raise UserInputError(
            f"unknown quant type(s) {', '.join(unknown)}; valid types: {', '.join(FTYPES)}"
        )
    return list(dict.fromkeys(out))


def model_stem(gguf_path: Path) -> str:
    """``dear-8b-BF16.gguf`` -> ``dear-8b``."""
    return _SOURCE_SUFFIX.sub("", Path(gguf_path).stem)


def output_file(gguf_path: Path, out_dir: Path, qtype: str) -> Path:
    return Path(out_dir) / f"{model_stem(gguf_path)}-{qtype}.gguf"


def llama_cpp_build() -> dict:
    """What llama.cpp build did the quantizing: package version, ggml version and commit, CPU features."""
    import llama_cpp

    info = {"llama_cpp_python": llama_cpp.__version__}
    try:
        lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
        for name in ("ggml_version", "ggml_commit"):
            fn = getattr(lib, name)
            fn.restype = ctypes.c_char_p
            info[name] = fn().decode()
    except (OSError, AttributeError):
        pass  # other platforms name the library differently; the package version still pins it
    info["system_info"] = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    return info


def gguf_facts(path: Path) -> dict:
    """Tensor bytes, weight count, bits per weight and provenance keys of a GGUF file."""
    import gguf

    r = gguf.GGUFReader(path)
    n_bytes = sum(int(t.n_bytes) for t in r.tensors)
    n_params = sum(int(t.n_elements) for t in r.tensors)

    def text(key):
        f = r.fields.get(key)
        return f.contents() if f is not None else None

    return {
        "n_params": n_params,
        "tensor_bytes": n_bytes,
        "bits_per_weight": round(8 * n_bytes / n_params, 4) if n_params else None,
        "source_repo": text(KEY_SOURCE_REPO),
        "source_revision": text(KEY_SOURCE_REVISION),
    }


def _quantize_one(src: Path, dest: Path, qtype: str, threads: int | None, matrix=None) -> float:
    import llama_cpp

    from dear_local.progress import bar

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[qtype]
    params.nthread = int(threads or 0)  # 0: all hardware threads
    params.allow_requantize = False
    params.quantize_output_tensor = True
    params.only_copy = False
    params.pure = False
    params.keep_split = False
    if matrix is not None:  # a convert.imatrix_file.QuantizeMatrix: it owns the buffers
        params.imatrix = ctypes.cast(matrix.imatrix, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
        params.kv_overrides = ctypes.cast(matrix.kv_overrides, ctypes.POINTER(llama_cpp.llama_model_kv_override))
    t0 = time.perf_counter()
    with atomic_path(dest) as tmp, bar(None, f"quantize {qtype}", unit="tensor") as pbar:

        def on_line(line: str) -> None:
            m = _TENSOR_LINE.search(line)
            if m:
                pbar.total = int(m.group(2))
                pbar.update(int(m.group(1)) - pbar.n)

        with LogCapture(on_line) as log:
            rc = llama_cpp.llama_model_quantize(
                str(src).encode(), str(tmp).encode(), ctypes.byref(params)
            )
        if rc != 0 or not tmp.is_file():
            detail = "; ".join(log.errors[-3:]) or f"return code {rc}"
            raise QuantizeError(
                f"llama.cpp could not quantize {src.name} to {qtype}: {detail}. "
                "Quantize from the BF16/F16/F32 GGUF that `dear-local convert` writes"
            )
    return time.perf_counter() - t0


def load_manifest(path: Path) -> dict:
    if path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            pass  # rewritten below
    return {}


def file_entry(path: Path, qtype: str, build: dict, seconds: float | None = None) -> dict:
    from dear_local import __version__

    facts = gguf_facts(path)
    entry = {
        "file": path.name,
        "type": qtype,
        "bytes": path.stat().st_size,
        "bits_per_weight": facts["bits_per_weight"],
        "n_params": facts["n_params"],
        "sha256": sha256_file(path),
        "source_repo": facts["source_repo"],
        "source_revision": facts["source_revision"],
        "dear_local_version": __version__,
        "llama_cpp": build,
    }
    if seconds is not None:
        entry["seconds"] = round(seconds, 2)
    return entry


def _output_files(src: Path, out_dir: Path, qtypes: list[str], force: bool) -> dict[str, Path]:
    """The file each type will be written to, after checking the input and that ``out_dir`` takes them."""
    if not src.is_file():
        raise UserInputError(f"{src} does not exist; convert a checkpoint first with `dear-local convert`")
    with open(src, "rb") as f:
        if f.read(4) != b"GGUF":
            raise UserInputError(f"{src} is not a GGUF file")
    targets = {t: output_file(src, out_dir, t) for t in qtypes}
    clash = [p.name for t, p in targets.items() if p.exists() and not force and p.resolve() != src.resolve()]
    if clash:
        raise UserInputError(f"{', '.join(clash)} already exist(s) in {out_dir}; pass --force to overwrite")
    check_writable(out_dir)
    return targets


def quantize(
    gguf_path: str | Path,
    types: list[str] | str,
    out_dir: str | Path,
    *,
    threads: int | None = None,
    force: bool = False,
    imatrix: str | Path | None = None,
    on_file=None,
) -> dict:
    """Quantize ``gguf_path`` to each of ``types`` in ``out_dir``; return the updated manifest.

    Outputs are ``<name>-<TYPE>.gguf`` where ``<name>`` is the input's name without
    its ``-BF16``/``-F16``/``-F32`` suffix. A type whose output is the input file
    itself is recorded without requantizing. Existing outputs are refused unless
    ``force``. ``on_file(entry)`` is called after each file.

    ``imatrix`` is a GGUF importance matrix (``dear-local imatrix``), checked against
    the model and handed to llama.cpp; each entry then records its sha256 and
    calibration slice. Types in ``NEEDS_IMATRIX`` are refused without one.

    The manifest (``out_dir/manifest.json``) lists per file: type, bytes, bits per
    weight, sha256, provenance and the llama.cpp build. Each output goes through
    ``.partial`` and is renamed only when llama.cpp reports success.

    Raises:
        UserInputError: an unknown type, an i-quant without a matrix, an existing output without ``force``.
        QuantizeError: llama.cpp refused or failed (its log lines are in the message).
    """
    try:
        import llama_cpp  # noqa: F401
    except ImportError as exc:  # pragma: no cover - a base dependency
        raise QuantizeError("llama-cpp-python is not installed: pip install dear-local") from exc
    src = Path(gguf_path).expanduser()
    out_dir = Path(out_dir).expanduser()
    qtypes = parse_types(types)
    need = [t for t in qtypes if t in NEEDS_IMATRIX]
    if need and imatrix is None:
        raise UserInputError(
            f"{', '.join(need)} need(s) an importance matrix; make one with `dear-local imatrix CHECKPOINT "
            "--slice dl19-top20 --out imatrix.gguf` and pass --imatrix imatrix.gguf"
        )
    targets = _output_files(src, out_dir, qtypes, force)
    matrix = None
    if imatrix is not None:
        from dear_local_convert.quant.imatrix_file import QuantizeMatrix

        matrix = QuantizeMatrix(imatrix, src)
    build = llama_cpp_build()
    source = {"file": src.name, **{k: v for k, v in gguf_facts(src).items() if k.startswith("source_")}}
    manifest_path = out_dir / MANIFEST
    manifest = load_manifest(manifest_path)
    files = {e["file"]: e for e in manifest.get("files", [])}
    for qtype, dest in targets.items():
        if dest.exists() and dest.resolve() == src.resolve():
            entry = file_entry(dest, qtype, build)
        else:
            seconds = _quantize_one(src, dest, qtype, threads, matrix)
            entry = file_entry(dest, qtype, build, seconds)
            if matrix is not None:
                entry["imatrix"] = matrix.manifest_entry()
        files[entry["file"]] = entry
        manifest = {
            "source": source,
            "files": sorted(files.values(), key=lambda e: (-e["bytes"], e["file"])),
        }
        write_text_atomic(manifest_path, json.dumps(manifest, indent=2) + "\n")
        if on_file is not None:
            on_file(entry)
    return manifest
