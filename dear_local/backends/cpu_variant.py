"""Which of llama.cpp's CPU backends this process runs: the best variant for the CPU, chosen at run time.

A llama-cpp-python built with ``GGML_BACKEND_DL=ON`` and ``GGML_CPU_ALL_VARIANTS=ON`` (the
README's install) ships one CPU backend per instruction-set level next to ``libllama.so``:
``libggml-cpu-x64.so`` (baseline x86-64), ``-haswell`` (AVX2), ``-skylakex`` (AVX-512),
``-icelake`` (AVX-512 VNNI), ``-zen4`` (AVX-512 BF16), ``-alderlake`` (AVX-VNNI),
``-sapphirerapids`` (AMX) and others. llama-cpp-python loads none of them itself
(abetlen/llama-cpp-python#2069), so no model can load until one is. :func:`ensure_cpu_backend`
loads one, once per process, before the first model:

- **auto** (default): every variant's own ``ggml_backend_score()`` says whether this CPU has
  the instructions it was compiled for (0 when not) and how many; the highest score wins.
  This is llama.cpp's own rule (``ggml_backend_load_best``), run here so that the choice
  and its reason can be reported. One exception: an AMX variant compiled by GCC older than
  13 is skipped, because its AMX kernels crash on quantized models (ggml-org/llama.cpp#20824).
  AMX CPUs then run the best AVX-512 variant, with repacked weights.
- **a name** (``DEAR_LOCAL_CPU_VARIANT=haswell``, or ``baseline`` for the lowest one): that
  variant, or a one-line error when this CPU cannot run it.

A llama-cpp-python built the older way, with one CPU backend linked in, needs nothing:
:func:`ensure_cpu_backend` reports it as ``built in``.

The choice is process-wide: llama.cpp registers one CPU backend per process, so the first
load decides, and a later change of the setting has no effect until a new process starts.

Errors: :class:`~dear_local.errors.UserInputError` for an unknown or unsupported variant
name, or a name set for a build without variants; :class:`~dear_local.errors.DearLocalError`
when llama.cpp refuses to load a variant file.
"""

from __future__ import annotations

import ctypes
import re
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DearLocalError, UserInputError
from ..llama_cpp_lib import LogCapture

# Variants whose kernels use AMX tiles (ggml/src/CMakeLists.txt's GGML_CPU_ALL_VARIANTS list).
AMX_VARIANTS = frozenset({"sapphirerapids"})
BASELINE = "baseline"  # the setting's alias for the lowest-scoring variant the CPU runs
_FILE = re.compile(r"^(?:lib)?ggml-cpu-(?P<name>[A-Za-z0-9_.]+)\.(?:so|dll|dylib)$")

_LOCK = threading.Lock()
_LOADED: "CpuBackend | None" = None


@dataclass(frozen=True)
class CpuBackend:
    """The CPU backend this process runs.

    ``variant``: the variant's name (``zen4``), or None for a build with one CPU backend
    linked in; ``path``: its library file; ``reason``: why it was chosen, in one sentence;
    ``scores``: every variant found, by name, with its score on this CPU (0: the CPU lacks
    an instruction it needs), highest first.
    """

    variant: str | None
    path: Path | None
    reason: str
    scores: dict[str, int] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.variant or "built in"


def library_dir() -> Path:
    """The folder holding llama-cpp-python's libraries (``llama_cpp/lib``)."""
    import llama_cpp

    return Path(llama_cpp.__file__).resolve().parent / "lib"


def variant_files(folders: list[Path] | None = None) -> dict[str, Path]:
    """``{name: path}`` of every CPU variant library in ``folders``.

    By default: ``llama_cpp/lib``, then the ``bin`` folder beside the package, where ggml's
    own install rule puts them when ``GGML_BACKEND_DIR`` was not set at build time.
    """
    if folders is None:
        lib = library_dir()
        folders = [lib, lib.parents[1] / "bin"]
    found: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            m = _FILE.match(path.name)
            if m and m["name"] not in found:
                found[m["name"]] = path
    return found


def compiler_of(path: Path) -> tuple[str, int] | None:
    """``("gcc", 12)`` or ``("clang", 18)``: the compiler named in a library's ``.comment`` strings, or None."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    m = re.search(rb"GCC: \([^)]*\) (\d+)\.", data)
    if m:
        return "gcc", int(m[1])
    m = re.search(rb"clang version (\d+)", data)
    if m:
        return "clang", int(m[1])
    return None


def amx_safe(compiler: tuple[str, int] | None) -> bool:
    """Whether AMX kernels from this compiler are safe: clang, or GCC 13 and later (see the module docstring)."""
    if compiler is None:
        return False
    name, major = compiler
    return name == "clang" or major >= 13


def pick(scores: dict[str, int], requested: str, amx_compilers: dict[str, tuple[str, int] | None]) -> tuple[str, str]:
    """``(name, reason)``: the variant to load, from the variants' scores on this CPU.

    ``requested`` is ``auto``, ``baseline`` or a variant name; ``amx_compilers`` gives the
    compiler of each AMX variant in ``scores``. Pure: no library is touched.

    Raises:
        UserInputError: an unknown name, or a variant this CPU cannot run (score 0).
    """
    runnable = {name: s for name, s in scores.items() if s > 0}
    names = ", ".join(sorted(runnable, key=lambda n: (-runnable[n], n))) or "none"
    if requested == "auto":
        skipped = [n for n in runnable if n in AMX_VARIANTS and not amx_safe(amx_compilers.get(n))]
        eligible = {n: s for n, s in runnable.items() if n not in skipped}
        if not eligible:
            raise DearLocalError(
                f"none of llama.cpp's CPU variants ({', '.join(sorted(scores)) or 'none'}) runs on this CPU; "
                "reinstall llama-cpp-python as the README says"
            )
        best = max(sorted(eligible), key=lambda n: eligible[n])
        reason = f"the best of the {len(runnable)} variants this CPU runs (of {len(scores)} built)"
        for n in skipped:
            comp = amx_compilers.get(n)
            built = f"{comp[0].upper() if comp[0] == 'gcc' else comp[0]} {comp[1]}" if comp else "an unknown compiler"
            reason += (
                f"; {n} skipped: its AMX kernels were compiled by {built}, which crash on quantized models "
                f"(ggml-org/llama.cpp#20824); DEAR_LOCAL_CPU_VARIANT={n} uses it anyway"
            )
        return best, reason
    if requested == BASELINE:
        if not runnable:
            raise UserInputError("DEAR_LOCAL_CPU_VARIANT=baseline: no CPU variant of this llama.cpp runs on this CPU")
        lowest = min(sorted(runnable), key=lambda n: runnable[n])
        return lowest, "the baseline, set by DEAR_LOCAL_CPU_VARIANT=baseline"
    if requested not in scores:
        raise UserInputError(
            f"DEAR_LOCAL_CPU_VARIANT={requested}: no such CPU variant in this llama.cpp; "
            f"use auto, baseline or one of: {', '.join(sorted(scores))}"
        )
    if scores[requested] <= 0:
        raise UserInputError(
            f"DEAR_LOCAL_CPU_VARIANT={requested}: this CPU lacks instructions that variant needs; "
            f"unset it (or set auto) for the best one, or name one it runs: {names}"
        )
    return requested, "set by DEAR_LOCAL_CPU_VARIANT"


def requested_variant() -> str:
    """The ``DEAR_LOCAL_CPU_VARIANT`` setting, lower-cased (``auto`` when unset)."""
    from ..settings import get_settings

    return (get_settings().cpu_variant or "auto").strip().lower() or "auto"


def check_variant_setting() -> str:
    """The ``DEAR_LOCAL_CPU_VARIANT`` setting, checked against the variants installed, without loading any.

    Commands call it before they read their inputs, so a bad setting is the first thing said.

    Raises:
        UserInputError: a name no installed variant has, or any name while the build has none.
    """
    requested = requested_variant()
    if requested in ("auto", BASELINE) and (requested == "auto" or variant_files()):
        return requested
    files = variant_files()
    if not files:
        raise UserInputError(
            f"DEAR_LOCAL_CPU_VARIANT={requested} is set, but this llama-cpp-python has one CPU backend "
            "built in and no variants to choose from; unset it, or reinstall llama-cpp-python as the README says"
        )
    if requested not in files:
        raise UserInputError(
            f"DEAR_LOCAL_CPU_VARIANT={requested}: no such CPU variant in this llama-cpp-python; "
            f"use auto, baseline or one of: {', '.join(sorted(files))}"
        )
    return requested


def ggml_library(lib: Path | None = None) -> Path:
    """The ``libggml`` file that ``libllama`` itself loaded.

    A wheel cannot hold symlinks, so ``libggml.so``, ``libggml.so.0`` and ``libggml.so.0.25.3``
    are three copies of one library, and each copy loaded keeps its own backend registry.
    ``libllama`` loads the one named by its soname (``libggml.so.<major>``); a backend loaded
    into any other copy would be invisible to it.
    """
    lib = lib or library_dir()
    if sys.platform == "win32":
        return lib / "ggml.dll"
    if sys.platform == "darwin":
        sonamed = sorted(lib.glob("libggml.[0-9]*.dylib"), key=lambda p: len(p.name))
        return sonamed[0] if sonamed else lib / "libggml.dylib"
    sonamed = [p for p in lib.glob("libggml.so.*") if re.fullmatch(r"libggml\.so\.\d+", p.name)]
    return sonamed[0] if sonamed else lib / "libggml.so"


def _ggml() -> ctypes.CDLL:
    ggml = ctypes.CDLL(str(ggml_library()))  # the same file as libllama's: the same handle
    ggml.ggml_backend_reg_by_name.argtypes = [ctypes.c_char_p]
    ggml.ggml_backend_reg_by_name.restype = ctypes.c_void_p
    ggml.ggml_backend_load.argtypes = [ctypes.c_char_p]
    ggml.ggml_backend_load.restype = ctypes.c_void_p
    return ggml


def _score(path: Path) -> int:
    """A variant library's ``ggml_backend_score()`` on this CPU (0 when the CPU lacks what it needs).

    The score function is compiled without the variant's instruction-set flags, so it runs on
    any CPU; the library is unmapped again afterwards.
    """
    lib = ctypes.CDLL(str(path), mode=getattr(ctypes, "RTLD_LOCAL", 0))
    try:
        fn = getattr(lib, "ggml_backend_score", None)
        if fn is None:
            return 1  # a variant without a score function claims to run anywhere, as ggml assumes
        fn.restype = ctypes.c_int
        fn.argtypes = []
        return int(fn())
    finally:
        _close(lib)


def _close(lib: ctypes.CDLL) -> None:
    """Unmap a library opened only to read its score, as llama.cpp's own loader does."""
    import _ctypes

    close = getattr(_ctypes, "dlclose", None) or getattr(_ctypes, "FreeLibrary", None)
    if close is not None:
        close(lib._handle)


def ensure_cpu_backend() -> CpuBackend:
    """Load the CPU backend for this process once, and return which one it is.

    Call before the first model load (the loader does). Idempotent and thread-safe.

    Raises:
        UserInputError: ``DEAR_LOCAL_CPU_VARIANT`` names no variant, one this CPU cannot run,
            or is set while this llama-cpp-python has no variants.
        DearLocalError: llama.cpp refused the chosen variant's file.
    """
    global _LOADED
    with _LOCK:
        if _LOADED is not None:
            return _LOADED
        import llama_cpp  # noqa: F401  (loads libllama and libggml)

        requested = check_variant_setting()
        ggml = _ggml()
        files = variant_files()
        if ggml.ggml_backend_reg_by_name(b"CPU") or not files:
            _LOADED = CpuBackend(
                None, None,
                "this llama-cpp-python has one CPU backend built in (not built with GGML_BACKEND_DL=ON and "
                "GGML_CPU_ALL_VARIANTS=ON), so its kernels are the ones it was compiled for",
            )
            return _LOADED
        scores = {name: _score(path) for name, path in files.items()}
        amx = {name: compiler_of(files[name]) for name in scores if name in AMX_VARIANTS}
        name, reason = pick(scores, requested, amx)
        with LogCapture() as log:  # ggml logs "load_backend: loaded CPU backend from ..." at INFO
            loaded = ggml.ggml_backend_load(str(files[name]).encode())
        if not loaded:
            why = "; ".join(log.errors[-2:])
            raise DearLocalError(
                f"llama.cpp could not load its CPU backend {files[name]}{f' ({why})' if why else ''}; "
                "reinstall llama-cpp-python with scripts/setup"
            )
        ordered = dict(sorted(scores.items(), key=lambda kv: (-kv[1], kv[0])))
        _LOADED = CpuBackend(name, files[name], reason, ordered)
        return _LOADED


def loaded_cpu_backend() -> CpuBackend | None:
    """The backend :func:`ensure_cpu_backend` loaded in this process, or None before the first load."""
    return _LOADED
