"""One llama.cpp quantize, run in a child process so that Ctrl-C can stop it.

``llama_model_quantize`` has no way to be aborted: it runs to the end even when
Ctrl-C arrives (a ``KeyboardInterrupt`` raised inside its log callback is
printed and dropped by ctypes). So :func:`quantize.quantize` starts this module
as ``python -m dear_local_convert.quant.worker``, and on Ctrl-C kills it and
removes the partial file. Starting the child costs about a second (importing
llama_cpp), small next to any real quantize.

Protocol: the parent writes one JSON line on stdin
(``{"src", "dest", "type", "threads", "imatrix"}``) and keeps stdin open. The
child answers on stdout with JSON lines: ``{"tensor": i, "total": n}`` as
tensors are written, then ``{"rc": int, "errors": [str, ...]}``. When stdin
closes early (the parent died), the child removes ``dest`` and exits at once.
The child ignores SIGINT: the terminal sends it to the whole process group,
and the parent decides.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import sys
import threading
from pathlib import Path

_TENSOR_LINE = re.compile(r"\[\s*(\d+)/\s*(\d+)\]")


def run_quantize(src: Path, dest: Path, qtype: str, threads: int | None, imatrix: str | None, on_line=None):
    """Call ``llama_model_quantize`` for ``src`` -> ``dest``; return ``(rc, error messages llama.cpp logged)``."""
    import llama_cpp

    from dear_local.backends.cpu_variant import ensure_cpu_backend
    from dear_local.llama_cpp_lib import LogCapture
    from dear_local_convert.quant.quantize import FTYPES

    ensure_cpu_backend()  # the quantizer's row kernels come from the CPU backend

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[qtype]
    params.nthread = int(threads or 0)  # 0: all hardware threads
    params.allow_requantize = False
    params.quantize_output_tensor = True
    params.only_copy = False
    params.pure = False
    params.keep_split = False
    matrix = None
    if imatrix is not None:  # the QuantizeMatrix owns the buffers the pointers refer to
        from dear_local_convert.quant.imatrix_file import QuantizeMatrix

        matrix = QuantizeMatrix(imatrix, src)
        params.imatrix = ctypes.cast(matrix.imatrix, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
        params.kv_overrides = ctypes.cast(matrix.kv_overrides, ctypes.POINTER(llama_cpp.llama_model_kv_override))
    with LogCapture(on_line) as log:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dest).encode(), ctypes.byref(params))
    del matrix
    return rc, log.errors


def _send(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _exit_when_parent_goes(dest: Path) -> None:
    """Read stdin to its end (the parent closed it or died), then remove ``dest`` and exit."""
    for _ in sys.stdin:
        pass
    dest.unlink(missing_ok=True)
    os._exit(3)


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    job = json.loads(sys.stdin.readline())
    src, dest = Path(job["src"]), Path(job["dest"])
    threading.Thread(target=_exit_when_parent_goes, args=(dest,), daemon=True).start()

    def on_line(line: str) -> None:
        m = _TENSOR_LINE.search(line)
        if m:
            _send({"tensor": int(m.group(1)), "total": int(m.group(2))})

    result: dict = {}

    def work() -> None:
        try:
            rc, errors = run_quantize(src, dest, job["type"], job.get("threads"), job.get("imatrix"), on_line)
        except BaseException as exc:  # reported to the parent as a failure, with the reason
            rc, errors = -1, [f"{type(exc).__name__}: {exc}"]
        result.update(rc=int(rc), errors=errors)

    # Off the main thread, so the log capture cannot install a SIGINT handler over SIG_IGN:
    # the child never reacts to Ctrl-C, whatever the parent does with it.
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    _send(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
