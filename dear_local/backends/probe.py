"""Load a GGUF and decode a few tokens in a child process, so a native crash cannot take the caller down.

``probe_model`` runs ``python -m dear_local.backends.probe PATH --cpu-buffers MODE``;
the child prints one JSON line. A child killed by a signal (SIGSEGV, SIGILL,
SIGABRT, ...) becomes a :class:`ProbeResult` with ``ok = False`` and the signal's
name, never an exception in the parent. A model llama.cpp refuses to load (no
crash: a corrupt file, an unknown architecture) comes back with ``refused`` set to
the child's error message.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PROBE_PROMPT = "Rank the passages. [1] Paris is the capital of France. [2] Bananas are yellow. Answer:"


@dataclass(frozen=True)
class ProbeResult:
    """Outcome of one probe: ``ok``; ``detail`` is the decoded text or what went wrong."""

    ok: bool
    cpu_buffers: str
    detail: str
    signal: str | None = None
    seconds: float = 0.0
    refused: str | None = None  # the error dear-local raised in the child (not a crash), e.g. an unloadable file


def _signal_name(returncode: int) -> str | None:
    if returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def probe_model(path: str | Path, cpu_buffers: str | None = None, *, n_tokens: int = 4, timeout: float = 300.0) -> ProbeResult:
    """Load ``path`` and greedily decode ``n_tokens`` tokens in a child process.

    ``cpu_buffers`` is a loader mode (``auto``/``extra``/``plain``; default: the
    ``DEAR_LOCAL_CPU_BUFFERS`` setting). Never raises for a crash or a timeout:
    both come back as ``ok = False``.
    """
    from .loader import check_cpu_buffers

    mode = check_cpu_buffers(cpu_buffers if cpu_buffers is not None else _setting())
    cmd = [sys.executable, "-m", "dear_local.backends.probe", str(path), "--cpu-buffers", mode, "--tokens", str(n_tokens)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return ProbeResult(False, mode, f"no answer within {timeout:.0f} s", seconds=time.perf_counter() - t0)
    seconds = time.perf_counter() - t0
    sig = _signal_name(proc.returncode)
    if sig is not None:
        return ProbeResult(False, mode, f"llama.cpp was killed by {sig}", signal=sig, seconds=seconds)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    out = json.loads(lines[-1]) if lines else {}
    if "error" in out:
        return ProbeResult(False, mode, out["error"], seconds=seconds, refused=out["error"])
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return ProbeResult(False, mode, f"exit {proc.returncode}: {tail}", seconds=seconds)
    return ProbeResult(True, out["cpu_buffers"], out["text"], seconds=seconds)


def _setting() -> str:
    from ..settings import get_settings

    return get_settings().cpu_buffers


def _run(path: str, cpu_buffers: str, n_tokens: int) -> dict:
    from .llama import LlamaCppBackend

    backend = LlamaCppBackend(path, n_ctx=256, cpu_buffers=cpu_buffers)
    try:
        # The prompt pass and then single-token steps, end-of-generation or not:
        # both kinds of llama.cpp call are exercised.
        logits = backend.prefill(backend.tokenize(PROBE_PROMPT, add_bos=backend.add_bos))
        out: list[int] = []
        for _ in range(n_tokens):
            out.append(int(logits.argmax()))
            logits = backend.extend(out[-1:])
        return {"cpu_buffers": backend.cpu_buffers.mode, "tokens": out, "text": backend.detokenize(out)}
    finally:
        backend.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Load a GGUF and decode a few tokens (run by `dear-local env --model`).")
    ap.add_argument("path")
    ap.add_argument("--cpu-buffers", default="auto")
    ap.add_argument("--tokens", type=int, default=4)
    args = ap.parse_args(argv)
    from ..errors import DearLocalError

    try:
        result = _run(args.path, args.cpu_buffers, args.tokens)
    except (DearLocalError, ValueError) as exc:  # llama.cpp refused the file: no crash, a reason
        print(json.dumps({"error": str(exc)}), flush=True)
        return 3
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
