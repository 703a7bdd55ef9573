"""Running the app under uvicorn: in the foreground (the CLI) or on a background thread.

``background(app)`` serves on an ephemeral loopback port and yields the base
URL; desktop apps that embed dear-local, the tests and the benchmark use it.
On exit it asks uvicorn to stop, which lets requests in flight finish.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from typing import Iterator

import uvicorn

from .config import ServerSettings

GRACE_SECONDS = 5.0


def _config(app, settings: ServerSettings | None, log_level: str) -> uvicorn.Config:
    timeout = settings.timeout if settings else 300.0
    return uvicorn.Config(
        app,
        log_level=log_level,
        lifespan="on",
        # Every request ends by its own timeout; after that (plus a grace) shutdown cancels it.
        timeout_graceful_shutdown=int(timeout + GRACE_SECONDS),
        server_header=False,
    )


def serve(app, settings: ServerSettings, log_level: str = "info") -> None:
    """Serve in the foreground until Ctrl-C or SIGTERM, then shut down gracefully and return.

    uvicorn handles the signal (finishing the request in flight) and then raises
    it again for the caller; here that second delivery is absorbed, so a clean
    shutdown ends the command with exit code 0. Call it from the main thread.
    """
    config = _config(app, settings, log_level)
    config.host, config.port = settings.host, settings.port
    previous = signal.signal(signal.SIGTERM, _already_handled)
    try:
        uvicorn.Server(config).run()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def _already_handled(_signum, _frame) -> None:
    """uvicorn re-raises the SIGTERM it shut down for; there is nothing left to do."""


@contextlib.contextmanager
def background(
    app, settings: ServerSettings | None = None, host: str = "127.0.0.1", log_level: str = "warning",
    start_timeout: float = 30.0,
) -> Iterator[str]:
    """Serve ``app`` on a free port of ``host`` from a background thread; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(_config(app, settings, log_level))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="dear-local-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("the server did not start; see the log above")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join()
        sock.close()
