"""Running the app under uvicorn: in the foreground (the CLI) or on a background thread.

``listen(host, port)`` binds the listening sockets first, so a port in use is one clear
error before anything claims to serve; uvicorn is then handed those very sockets (no
second bind, so no race with another process taking the port in between).
``background(app)`` serves on an ephemeral loopback port and yields the base
URL; desktop apps that embed dear-local, the tests and the benchmark use it.
On exit it asks uvicorn to stop, which lets requests in flight finish.
Both hide secrets from uvicorn's logs (:mod:`.logs`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import threading
import time
from typing import Iterator

import uvicorn

from ..errors import UserInputError
from . import logs
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


def listen(host: str, port: int) -> list[socket.socket]:
    """Bind TCP sockets for ``host`` (an address or a name; every address it resolves to) and ``port``.

    Port 0 takes a free port (the first address's, for all). Returns the bound sockets;
    uvicorn makes them listen. Raises ``UserInputError`` with one line naming the fix
    (--port or --host) when the port is in use, needs privileges, or the address is not
    this machine's.
    """
    if host.startswith("[") and host.endswith("]"):  # [::1] as written in URLs
        host = host[1:-1]
    shown = f"[{host}]" if ":" in host else host
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise UserInputError(
            f"--host {host!r} is not an address or a name this machine can resolve ({exc}); "
            "pass an address such as 127.0.0.1 or 0.0.0.0"
        ) from None
    addresses = list(dict.fromkeys((family, addr) for family, _, _, _, addr in infos))
    sockets: list[socket.socket] = []
    failure: OSError | None = None
    for family, addr in addresses:
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:  # e.g. IPv6 switched off: serve on the other addresses
            failure = failure or exc
            continue
        try:
            if os.name != "nt":  # on Windows SO_REUSEADDR would let two servers share the port
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and sockets:
                addr = (addr[0], bound_port(sockets), *addr[2:])
            sock.bind(addr)
        except OSError as exc:
            sock.close()
            if exc.errno in _UNAVAILABLE and len(addresses) > 1:  # a name's address this machine lacks
                failure = failure or exc
                continue
            for other in sockets:
                other.close()
            raise UserInputError(_bind_error(exc, shown, port)) from None
        sockets.append(sock)
    if not sockets:
        raise UserInputError(_bind_error(failure or OSError(errno.EADDRNOTAVAIL, "no address"), shown, port))
    for sock in sockets:
        sock.set_inheritable(True)
    return sockets


_UNAVAILABLE = {errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT}


def _bind_error(exc: OSError, host: str, port: int) -> str:
    if exc.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1)):
        return f"port {port} on {host} is in use; pick another with --port"
    if exc.errno in (errno.EACCES, getattr(errno, "WSAEACCES", -1)):
        return f"port {port} on {host} needs privileges this process lacks; pick one above 1023 with --port"
    if exc.errno in (*_UNAVAILABLE, getattr(errno, "WSAEADDRNOTAVAIL", -1)):
        return f"{host} is not an address of this machine; pass one of its addresses with --host (or 0.0.0.0)"
    return f"cannot listen on {host} port {port}: {exc.strerror or exc}; pick another --host or --port"


def bound_port(sockets: list[socket.socket]) -> int:
    """The port ``sockets`` listen on (the one chosen when port 0 was asked for)."""
    return sockets[0].getsockname()[1]


def serve(app, settings: ServerSettings, sockets: list[socket.socket] | None = None,
          log_level: str = "info") -> None:
    """Serve in the foreground until Ctrl-C or SIGTERM, then shut down gracefully and return.

    ``sockets``: from :func:`listen` (bound here from ``settings`` when None); closed on return.
    uvicorn handles the signal (finishing the request in flight) and then raises
    it again for the caller; here that second delivery is absorbed, so a clean
    shutdown ends the command with exit code 0. Call it from the main thread.
    """
    sockets = sockets if sockets is not None else listen(settings.host, settings.port)
    config = _config(app, settings, log_level)
    config.host, config.port = settings.host, bound_port(sockets)
    logs.install([settings.api_key])
    previous = signal.signal(signal.SIGTERM, _already_handled)
    try:
        uvicorn.Server(config).run(sockets=sockets)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        for sock in sockets:
            sock.close()


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
    logs.install([settings.api_key] if settings else [])
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
