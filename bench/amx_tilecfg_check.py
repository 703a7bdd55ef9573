"""Does llama.cpp's AMX tile configuration survive the compiler? A check that needs no AMX CPU.

llama.cpp's AMX kernels (``ggml/src/ggml-cpu/amx/mmq.cpp``) build a 64-byte tile
configuration on the stack in ``ggml_tile_config_init`` and load it with
``_tile_loadconfig(&tc)``. GCC's ``_tile_loadconfig`` (``amxtileintrin.h``) is an
``asm`` whose memory operand is ``*(const void **)config``: it tells the compiler
that only the first 8 bytes are read, so from -O1 up GCC may drop the stores of
the tile rows and column widths (bytes 16-63) as dead. The kernels then run on a
configuration with no tiles, which is the suspect behind the AMX crash
(SIGSEGV in ``ggml_backend_amx_mul_mat``, ggml-org/llama.cpp#20824).

This script cuts ``struct tile_config_t`` and ``ggml_tile_config_init`` out of a
llama.cpp source tree, compiles them for Sapphire Rapids with each compiler and
optimisation level asked for, and prints which bytes of the configuration are
written before ``ldtilecfg``. It only reads assembly; nothing runs AMX code.

    python bench/amx_tilecfg_check.py <llama.cpp>/ggml/src/ggml-cpu/amx/mmq.cpp
    python bench/amx_tilecfg_check.py mmq.cpp --cxx g++ "python -m ziglang c++" --opt O0 O2

The llama.cpp that llama-cpp-python 0.3.36 vendors is in its sdist
(``pip download llama-cpp-python==0.3.36 --no-deps --no-binary :all:``), under
``vendor/llama.cpp``.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path


def extract(source: str) -> str:
    """The config struct and the init function, as a translation unit of their own."""
    struct = re.search(r"struct tile_config_t\s*\{.*?\n\};", source, re.S)
    func = re.search(r"(?:inline\s+)?void ggml_tile_config_init\(void\)\s*\{.*?\n\}", source, re.S)
    if not struct or not func:
        sys.exit("struct tile_config_t or ggml_tile_config_init not found: not an AMX mmq.cpp of llama.cpp?")
    body = re.sub(r"^inline\s+", "", func.group(0))
    return "#include <immintrin.h>\n#include <cstdint>\n#include <cstring>\n" + struct.group(0) + "\n" + body + "\n"


def function_asm(asm: str) -> list[str]:
    """The instructions of ggml_tile_config_init, up to its return."""
    lines, inside = [], False
    for line in asm.splitlines():
        if re.match(r"^_Z\d+ggml_tile_config_initv:", line):
            inside = True
            continue
        if inside:
            s = line.strip()
            if not s or s.startswith((".", "#")) or s.endswith(":"):
                continue
            lines.append(s)
            if s.startswith("ret"):
                break
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mmq", type=Path, help="ggml/src/ggml-cpu/amx/mmq.cpp of the llama.cpp to check")
    ap.add_argument("--cxx", nargs="+", default=["g++"], help="C++ compilers (a command line each)")
    ap.add_argument("--opt", nargs="+", default=["O0", "O2", "O3"], help="optimisation levels, without the dash")
    ap.add_argument("--march", default="sapphirerapids")
    args = ap.parse_args(argv)

    unit = extract(args.mmq.read_text(encoding="utf-8", errors="replace"))
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "tilecfg.cpp"
        src.write_text(unit)
        for cxx in args.cxx:
            version = subprocess.run(shlex.split(cxx) + ["--version"], capture_output=True, text=True).stdout
            print(f"== {cxx}: {version.splitlines()[0] if version else '?'}")
            for opt in args.opt:
                out = Path(tmp) / "tilecfg.s"
                out.unlink(missing_ok=True)
                proc = subprocess.run(shlex.split(cxx) + [f"-{opt}", f"-march={args.march}", "-S", "-o", str(out), str(src)],
                                      capture_output=True, text=True)
                if proc.returncode != 0 or not out.is_file():
                    print(f"  -{opt}: compile failed: {proc.stderr.strip()[:300]}")
                    continue
                ins = function_asm(out.read_text())
                before = ins[: next((i for i, s in enumerate(ins) if s.startswith("ldtilecfg")), len(ins))]
                stores = [s for s in before if re.match(r"^(v?mov\w*)\s+.*,\s*-?\w*\(%[re]?[sb]p\)", s)]
                print(f"  -{opt}: {len(stores)} stores to the stack before ldtilecfg")
                for s in stores:
                    print(f"      {s}")
    print("\nA correct configuration needs palette_id = 1 and rows/colsb for tiles 0-7 (bytes 16-63) "
          "written before ldtilecfg; zeroing the struct and writing palette_id alone leaves every tile empty.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
