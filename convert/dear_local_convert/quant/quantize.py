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

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dear_local.errors import InvalidModelFileError, QuantizeError, UserInputError
from dear_local.fileio import atomic_path, check_writable, sha256_file, write_text_atomic
from dear_local.gguf_file import Keys, check_gguf, read_header

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
    """Tensor bytes, weight count, bits per weight and provenance keys of a GGUF file, from its header.

    Raises:
        InvalidModelFileError: a damaged header (see :func:`dear_local.gguf_file.read_header`).
        ValueError: a tensor of a ggml type whose size is not known here.
    """
    header = read_header(path, what="GGUF")
    n_bytes = sum(t.n_bytes for t in header.tensors)
    n_params = sum(t.n_elements for t in header.tensors)

    def text(key):
        value = header.get(key)
        return value if isinstance(value, str) else None

    return {
        "n_params": n_params,
        "tensor_bytes": n_bytes,
        "bits_per_weight": round(8 * n_bytes / n_params, 4) if n_params else None,
        "source_repo": text(Keys.SOURCE_REPO),
        "source_revision": text(Keys.SOURCE_REVISION),
    }


# Bits per weight of each type's main block format: a lower bound on its output
# size (K-quant mixes keep some tensors wider), used to refuse a disk that cannot
# hold it before spending minutes on it.
_MIN_BITS = {
    "F32": 32, "F16": 16, "BF16": 16, "Q8_0": 8.5, "Q6_K": 6.5625,
    "Q5_K_M": 5.5, "Q5_K_S": 5.5, "Q5_1": 6, "Q5_0": 5.5,
    "Q4_K_M": 4.5, "Q4_K_S": 4.5, "Q4_1": 5, "Q4_0": 4.5, "IQ4_XS": 4.25, "IQ4_NL": 4.5,
    "Q3_K_L": 3.4375, "Q3_K_M": 3.4375, "Q3_K_S": 3.4375, "IQ3_M": 3.4375, "IQ3_S": 3.4375,
    "IQ3_XS": 3.0625, "IQ3_XXS": 3.0625, "Q2_K": 2.625, "Q2_K_S": 2.625,
    "IQ2_M": 2.5, "IQ2_S": 2.5, "IQ2_XS": 2.3125, "IQ2_XXS": 2.0625, "IQ1_M": 1.75, "IQ1_S": 1.5625,
}  # fmt: skip
_DISK_FULL_MARGIN = 64 << 20  # a disk with less free than this after a failed write is full


def min_output_bytes(n_params: int, qtype: str) -> int:
    """A lower bound on the bytes of ``qtype``'s output for a model of ``n_params`` weights."""
    return int(n_params * _MIN_BITS[qtype] / 8)


def _free_bytes(folder: Path) -> int:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def _disk_full(out_dir: Path, qtype: str, need: int | None = None) -> QuantizeError:
    """The error for a disk that is full (``need`` None) or has less free than ``need`` bytes."""
    free = _free_bytes(out_dir) / 1e9
    state = f"is full ({free:.2f} GB free)" if need is None else (
        f"has {free:.2f} GB free and {qtype} needs at least {need / 1e9:.2f} GB"
    )
    return QuantizeError(f"the disk holding {out_dir} {state}; free some space or choose another --out")


def _worker_env() -> dict:
    """The child's environment: the parent's, with the folders dear_local and dear_local_convert come from."""
    import dear_local
    import dear_local_convert

    roots = [str(Path(m.__file__).resolve().parents[1]) for m in (dear_local_convert, dear_local)]
    env = dict(os.environ)
    inherited = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([*roots, *inherited]))
    return env


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _quantize_one(
    src: Path, dest: Path, qtype: str, threads: int | None, imatrix: Path | None = None, need: int = 0,
    record=None,
) -> float:
    """Quantize in a child process (see :mod:`.worker`): Ctrl-C kills it and removes the partial file.

    ``record(tmp, seconds)``, when given, is called with the finished ``.partial`` file before it is
    renamed to ``dest`` (to write the manifest first: a file under its final name is always recorded).
    """
    from dear_local.progress import bar

    out_dir = dest.parent
    if _free_bytes(out_dir) < need:
        raise _disk_full(out_dir, qtype, need)
    job = {"src": str(src), "dest": None, "type": qtype, "threads": threads,
           "imatrix": str(imatrix) if imatrix is not None else None}
    t0 = time.perf_counter()
    with atomic_path(dest) as tmp, bar(None, f"quantize {qtype}", unit="tensor") as pbar, \
            tempfile.TemporaryFile() as stderr:
        job["dest"] = str(tmp)
        proc = subprocess.Popen(
            [sys.executable, "-m", "dear_local_convert.quant.worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True, env=_worker_env(),
        )
        try:
            proc.stdin.write(json.dumps(job) + "\n")
            proc.stdin.flush()
            result = None
            for raw in proc.stdout:
                try:
                    msg = json.loads(raw)
                except json.JSONDecodeError:
                    continue  # a stray line printed by a library
                if "tensor" in msg:
                    pbar.total = msg["total"]
                    pbar.update(msg["tensor"] - pbar.n)
                elif "rc" in msg:
                    result = msg
            rc = proc.wait()
        finally:
            _stop(proc)  # Ctrl-C or any error here: the child stops, and atomic_path removes the partial file
        if result is not None and result["rc"] == 0 and tmp.is_file():
            seconds = time.perf_counter() - t0
            if record is not None:
                record(tmp, seconds)
            return seconds
        free = _free_bytes(out_dir)
        if free < _DISK_FULL_MARGIN or (result is not None and any("No space left" in e for e in result["errors"])):
            raise _disk_full(out_dir, qtype)
        if result is None or any(e.startswith("KeyboardInterrupt") for e in result["errors"]):
            raise QuantizeError(
                f"the quantizer process for {qtype} was {_stopped_by(rc, stderr)} before it finished; "
                "run the same command again to build the types not yet done"
            )
        detail = "; ".join(result["errors"][-3:]) or f"return code {result['rc']}"
        raise QuantizeError(
            f"llama.cpp could not quantize {src.name} to {qtype}: {detail}. "
            "Quantize from the BF16/F16/F32 GGUF that `dear-local convert` writes"
        )


def _stopped_by(rc: int | None, stderr) -> str:
    """How the quantizer process ended without an answer: a signal's name, or its last stderr line."""
    import signal

    if rc is not None and rc < 0:
        try:
            return f"stopped by {signal.Signals(-rc).name}"
        except ValueError:
            return f"stopped by signal {-rc}"
    stderr.seek(0)
    tail = (stderr.read().decode("utf-8", "replace").strip().splitlines() or [f"exit code {rc}"])[-1]
    return "interrupted" if "KeyboardInterrupt" in tail else f"stopped ({tail})"


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


def _output_files(src: Path, out_dir: Path, qtypes: list[str]) -> dict[str, Path]:
    """The file each type will be written to, after checking the input and that ``out_dir`` takes them."""
    if not src.exists():
        raise UserInputError(f"{src} does not exist; convert a checkpoint first with `dear-local convert`")
    check_gguf(src, what="input GGUF")  # a folder, an empty, foreign, corrupt or truncated file
    targets = {t: output_file(src, out_dir, t) for t in qtypes}
    check_writable(out_dir)
    return targets


def source_identity(src: Path) -> dict:
    """What tells the input GGUF apart cheaply: its name, size and modification time (ns)."""
    st = src.stat()
    return {"file": src.name, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def _already_built(dest: Path, qtype: str, manifest: dict, identity: dict, imatrix_sha: str | None) -> bool:
    """True when ``dest`` was built by an earlier run from the same input (and matrix) and is whole.

    The manifest must record ``dest`` as ``qtype``, made from a source of the same ``identity``
    with the same importance matrix (or none), and the file must have the recorded size and sha256.
    """
    if not dest.is_file() or manifest.get("source", {}).get("identity") != identity:
        return False
    entry = next((e for e in manifest.get("files", []) if e.get("file") == dest.name), None)
    if entry is None or entry.get("type") != qtype or entry.get("bytes") != dest.stat().st_size:
        return False
    if (entry.get("imatrix") or {}).get("sha256") != imatrix_sha:
        return False
    return entry.get("sha256") == sha256_file(dest)


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    out = []
    while not folder.exists() and folder != folder.parent:
        out.append(folder)
        folder = folder.parent
    return out


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()  # only succeeds on an empty folder


def quantize(
    gguf_path: str | Path,
    types: list[str] | str,
    out_dir: str | Path,
    *,
    threads: int | None = None,
    force: bool = False,
    imatrix: str | Path | None = None,
    on_file=None,
    on_kept=None,
) -> dict:
    """Quantize ``gguf_path`` to each of ``types`` in ``out_dir``; return the updated manifest.

    Outputs are ``<name>-<TYPE>.gguf`` where ``<name>`` is the input's name without
    its ``-BF16``/``-F16``/``-F32`` suffix. A type whose output is the input file
    itself is recorded without requantizing. ``on_file(entry)`` is called after each file.

    Each finished file is recorded in the manifest before it takes its final name, so a run
    that stops part way (Ctrl-C, SIGTERM, SIGHUP) can be resumed: run it again and the types
    already built from the same input (same name, size and modification time, same matrix)
    whose file still has its recorded size and sha256 are kept (``on_kept(type, path)`` is
    called for each) and the rest are built. Other existing outputs are refused unless
    ``force``, which rebuilds every type.

    ``imatrix`` is a GGUF importance matrix (``dear-local imatrix``), checked against
    the model and handed to llama.cpp; each entry then records its sha256 and
    calibration slice. Types in ``NEEDS_IMATRIX`` are refused without one.

    The manifest (``out_dir/manifest.json``) lists per file: type, bytes, bits per
    weight, sha256, provenance and the llama.cpp build. Each output goes through
    ``.partial`` and is renamed only when llama.cpp reports success.

    Each type is quantized in a child process: Ctrl-C (``KeyboardInterrupt``), SIGTERM and
    SIGHUP (raised here as ``KeyboardInterrupt``) stop it, remove its partial file and
    leave the manifest without it. A run that made
    ``out_dir`` and wrote nothing into it removes it again.

    Raises:
        UserInputError: an unknown type, an i-quant without a matrix, an existing output without ``force``.
        InvalidModelFileError: the input is not a whole GGUF (truncated, corrupt, empty, a folder).
        QuantizeError: llama.cpp refused or failed (its log lines are in the message), or the
            disk holding ``out_dir`` is full or cannot hold the output.
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
    created = _missing_folders(out_dir)
    try:
        with _terminate_as_interrupt():
            return _quantize_all(src, out_dir, qtypes, force, threads, imatrix, on_file, on_kept)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(out_dir, ", ".join(qtypes)) from None
        raise
    finally:
        for folder in created:  # a failed or interrupted run leaves no empty folder behind
            _remove_if_empty(folder)


@contextlib.contextmanager
def _terminate_as_interrupt():
    """Within the block, SIGTERM and SIGHUP raise ``KeyboardInterrupt`` as Ctrl-C does, so the
    same clean-up runs (the quantizer process stops, its ``.partial`` file is removed).
    Only in the main thread, where Python can set signal handlers."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    wanted = [sig for sig in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if sig is not None]
    previous = {}
    for sig in wanted:
        if signal.getsignal(sig) is not signal.SIG_IGN:  # nohup's SIGHUP stays ignored
            previous[sig] = signal.signal(sig, interrupt)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _quantize_all(src, out_dir, qtypes, force, threads, imatrix, on_file, on_kept) -> dict:
    targets = _output_files(src, out_dir, qtypes)
    if imatrix is not None:
        from dear_local_convert.quant.imatrix_file import QuantizeMatrix

        matrix = QuantizeMatrix(imatrix, src)  # checked here; the quantizer process loads it again
    else:
        matrix = None
    build = llama_cpp_build()
    try:
        facts = gguf_facts(src)
    except ValueError as exc:  # a tensor type check_gguf let through but whose size is unknown
        raise InvalidModelFileError(
            f"input GGUF {src} is corrupt ({exc}); re-convert it with `dear-local convert`"
        ) from None
    identity = source_identity(src)
    source = {"file": src.name, "identity": identity,
              **{k: v for k, v in facts.items() if k.startswith("source_")}}
    manifest_path = out_dir / MANIFEST
    manifest = load_manifest(manifest_path)
    imatrix_sha = matrix.manifest_entry()["sha256"] if matrix is not None else None
    kept = set()
    if not force:
        kept = {t for t, p in targets.items()
                if p.resolve() != src.resolve() and _already_built(p, t, manifest, identity, imatrix_sha)}
        clash = [p.name for t, p in targets.items() if p.exists() and t not in kept and p.resolve() != src.resolve()]
        if clash:
            raise UserInputError(
                f"{', '.join(clash)} already exist(s) in {out_dir} and {'is' if len(clash) == 1 else 'are'} not "
                "recorded in its manifest.json as built from this input; pass --force to overwrite"
            )
    files = {e["file"]: e for e in manifest.get("files", [])} if manifest.get("source", {}).get("identity") == identity \
        else {}

    def save(entry: dict) -> dict:
        files[entry["file"]] = entry
        out = {"source": source, "files": sorted(files.values(), key=lambda e: (-e["bytes"], e["file"]))}
        write_text_atomic(manifest_path, json.dumps(out, indent=2) + "\n")
        return out

    for qtype, dest in targets.items():
        if qtype in kept:
            if on_kept is not None:
                on_kept(qtype, dest)
            continue
        if dest.exists() and dest.resolve() == src.resolve():
            entry = file_entry(dest, qtype, build)
            save(entry)
        else:
            need = min_output_bytes(facts["n_params"], qtype)
            done: list[dict] = []

            def record(tmp: Path, seconds: float, qtype=qtype, dest=dest, done=done) -> None:
                entry = file_entry(tmp, qtype, build, seconds)
                entry["file"] = dest.name
                if matrix is not None:
                    entry["imatrix"] = matrix.manifest_entry()
                done.append(entry)
                save(entry)  # recorded before the rename: a file under its final name is always in the manifest

            _quantize_one(src, dest, qtype, threads, matrix.path if matrix else None, need, record)
            entry = done[0]
        if on_file is not None:
            on_file(entry)
    return {"source": source, "files": sorted(files.values(), key=lambda e: (-e["bytes"], e["file"]))}
