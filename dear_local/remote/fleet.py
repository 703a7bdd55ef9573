"""A fleet of inference servers: HTTP with timeouts, retries and failover.

Each server URL gets one :class:`Server` (an ``httpx`` client per thread). A request that
fails to connect or gets 429/502/503/504 is retried on the same server with exponential
backoff (``retries`` times, from ``backoff`` seconds). Every request has a total deadline,
``timeout`` seconds from sending it to the last byte of the answer, kept by a watchdog that
cuts the connection, so a server that stalls or sends its answer a byte at a time cannot
hold a run; a request past its deadline is not retried on that server. A server that still
fails is marked down for a cool-down (doubling on each failure in a row), and the request
moves to another server: every request carries its whole prompt, so any server can take it.
Only when every server is down does a request fail, with a
:class:`~dear_local.errors.ServerError` naming each server's last error. Start-up probes
(``probe=True``) get at most ``PROBE_TIMEOUT`` seconds. Answers must be JSON objects of at
most ``MAX_REPLY_BYTES``. Messages show each URL with its password masked (``Server.label``).

Requests of one thread stick to one server (:meth:`Fleet.server_for_thread`), so the
steps of a window hit the server whose prefix cache holds its prompt; each new query
(:meth:`Fleet.rebind`) goes to the server with the fewest threads on it.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import weakref
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from ..errors import ServerError
from ..redact import redact, redact_url, register_secrets
from ..settings import DEFAULT_REQUEST_TIMEOUT, DEFAULT_SERVER_RETRIES

RETRY_STATUS = frozenset({429, 502, 503, 504})
PROBE_TIMEOUT = 10.0  # seconds: start-up probes (/props, /tokenize, /v1/models) answer at once or not at all
MAX_REPLY_BYTES = 256 * 2**20  # a whole vocabulary's log-probabilities is tens of MB; more is a broken server


@dataclass
class FleetStats:
    """Counts over a run: requests sent, retries, failovers (work moved to another server)."""

    requests: int = 0
    retries: int = 0
    failovers: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def error_count(self) -> int:
        return self.retries + self.failovers


def _split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``url`` without its ``user:password@`` part, and that part (for HTTP basic auth), percent-decoded.

    The userinfo runs from ``scheme://`` to the URL's LAST ``@``, as :func:`~dear_local.redact.redact_url`
    masks it, so a password holding ``@``, ``/``, ``?``, ``#`` or spaces is taken whole.
    """
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at:
        return url, None
    user, _, password = userinfo.partition(":")
    return f"{scheme}://{host}", (unquote(user), unquote(password))


def _basic(user: str, password: str) -> str:
    """The ``Authorization: Basic`` value httpx sends for ``user``/``password``."""
    import base64

    return base64.b64encode(f"{user}:{password}".encode("utf-8")).decode("ascii")


class _Connection:
    """One thread's HTTP client for one server, and the sockets it opened (so a watchdog can cut them)."""

    def __init__(self, url: str, timeout: float, headers: dict, auth) -> None:
        import httpx

        self.http = httpx.Client(base_url=url, timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
                                 headers=headers, auth=auth)
        self._streams: weakref.WeakSet = weakref.WeakSet()
        self._lock = threading.Lock()  # the watchdog's thread and the request's thread both touch the streams
        self.cut_off = False

    def trace(self, event: str, info: dict) -> None:
        """httpx's ``trace`` extension: keep every network stream a request opens (TCP, then TLS)."""
        stream = info.get("return_value") if event.endswith(".complete") else None
        if stream is None or not hasattr(stream, "get_extra_info"):
            return
        with self._lock:
            self._streams.add(stream)
            if self.cut_off:  # connected after the deadline: cut this one too
                _shut(stream)

    def cut(self) -> None:
        """Shut this client's sockets down: a read blocked on any of them returns at once."""
        with self._lock:
            self.cut_off = True
            for stream in list(self._streams):
                _shut(stream)

    def close(self) -> None:
        self.http.close()


def _shut(stream) -> None:
    try:
        sock = stream.get_extra_info("socket")
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # closed already, or its descriptor moved to the TLS socket
        pass


class Server:
    """One server URL: HTTP clients (one per thread), its health, and how many threads use it.

    ``url`` may hold ``user:password@``: it is sent as HTTP basic auth, and ``label`` (the URL
    with the password masked) is what every message shows.

    Raises:
        ServerError: ``url`` cannot be parsed.
    """

    def __init__(self, url: str, *, timeout: float, api_key: str | None = None) -> None:
        self.label = redact_url(url.rstrip("/"))
        self.url, self._auth = _split_credentials(url.rstrip("/"))
        # every message built from this server's replies masks its password, basic and Bearer forms
        secrets = [api_key, f"Bearer {api_key}" if api_key else None]
        if self._auth:
            raw = url.partition("://")[2].rpartition("@")[0].partition(":")[2]
            secrets += [self._auth[1], raw, _basic(*self._auth)]
        register_secrets(*secrets)
        self.secrets = [s for s in secrets if s]
        try:
            import httpx

            httpx.URL(self.url)
            urlsplit(self.url).port  # a port out of range or not a number: ValueError
            if self._auth:
                _basic(*self._auth)
        except (ValueError, UnicodeError, httpx.InvalidURL) as exc:
            hint = ("percent-encode any of : / ? # @ or space in the password (%3A %2F %3F %23 %40 %20); "
                    if self._auth else "")
            raise ServerError(f"--server {self.label!r} is not a valid URL ({redact(str(exc), self.secrets)}); "
                              f"{hint}pass e.g. --server http://127.0.0.1:8080") from None
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._local = threading.local()
        self._connections: list[_Connection] = []
        self._connections_lock = threading.Lock()
        self.users = 0
        self.requests = 0  # requests sent to this server, retries included
        self.down_until = 0.0
        self.cooldown = 1.0
        self.last_error = ""

    def connection(self) -> _Connection:
        """This thread's client for the server."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _Connection(self.url, self.timeout, self._headers, self._auth)
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    def drop(self, conn: _Connection) -> None:
        """Close ``conn`` (its sockets were cut); this thread gets a new one next time."""
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._connections_lock:
            if conn in self._connections:
                self._connections.remove(conn)
        conn.close()

    @property
    def up(self) -> bool:
        return time.monotonic() >= self.down_until

    def mark_down(self, error: str) -> None:
        self.last_error = error
        self.down_until = time.monotonic() + self.cooldown
        self.cooldown = min(self.cooldown * 2, 60.0)

    def mark_up(self) -> None:
        self.cooldown = 1.0

    def close(self) -> None:
        with self._connections_lock:
            conns, self._connections = self._connections, []
        for conn in conns:
            conn.close()


class _Retryable(Exception):
    pass


class _TimedOut(_Retryable):
    """No complete answer within the deadline: not retried on the same server."""


class Fleet:
    """The servers of a run; see the module docstring.

    ``urls``: one or more base URLs (``http://host:port``); ``timeout``: seconds one request
    may take in all, from sending it to the last byte of the answer (a server that sends its
    answer a byte at a time cannot stretch it); ``retries``: attempts after the first on one
    server; ``backoff``: seconds before the first retry, doubled each time.

    Raises:
        ServerError: no URL, or a URL that is not ``http://`` or ``https://``.
    """

    def __init__(self, urls: list[str], *, timeout: float = DEFAULT_REQUEST_TIMEOUT, retries: int = DEFAULT_SERVER_RETRIES,
                 backoff: float = 0.5, api_key: str | None = None) -> None:
        if not urls:
            raise ServerError("no server given; pass --server http://HOST:PORT (repeat it for several)")
        for url in urls:
            if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
                raise ServerError(f"server {redact_url(str(url))!r} is not an http:// or https:// URL; "
                                  "pass e.g. --server http://127.0.0.1:8080")
        urls = [u.split("://", 1)[0].lower() + "://" + u.split("://", 1)[1] for u in urls]  # HTTP:// is http://
        self.servers = [Server(u, timeout=timeout, api_key=api_key) for u in dict.fromkeys(urls)]
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.stats = FleetStats()
        self._lock = threading.Lock()
        self._local = threading.local()

    # -- which server ----------------------------------------------------------------
    def _choose(self, avoid: frozenset = frozenset()) -> Server:
        with self._lock:
            up = [s for s in self.servers if s.up and s.url not in avoid]
            if not up:
                raise ServerError(
                    "every server is down: "
                    + "; ".join(f"{s.label}: {s.last_error or 'down'}" for s in self.servers)
                    + ". Check that the servers are running (and reachable from here), then run the same command "
                    "again: finished queries are kept"
                )
            best = min(up, key=lambda s: s.users)
            best.users += 1
            return best

    def _release(self, server: Server | None) -> None:
        if server is not None:
            with self._lock:
                server.users -= 1

    def rebind(self) -> None:
        """Let this thread's next request go to the least-used server (call once per query)."""
        self._release(getattr(self._local, "server", None))
        self._local.server = None

    def thread_server_label(self) -> str:
        """The (password-masked) URL of the server this thread's requests go to, for messages."""
        server = getattr(self._local, "server", None)
        return server.label if server is not None else "the server"

    def server_for_thread(self) -> Server:
        server = getattr(self._local, "server", None)
        if server is None or not server.up:
            self._release(server)
            server = self._local.server = self._choose()
        return server

    # -- requests --------------------------------------------------------------------
    def _once(self, server: Server, method: str, path: str, body: dict | None, timeout: float) -> dict:
        """One HTTP exchange, cut off ``timeout`` seconds after it starts whatever the server does."""
        import httpx

        conn = server.connection()
        deadline = time.monotonic() + timeout
        watchdog = threading.Timer(timeout, conn.cut)  # wakes a read blocked on a server that stalls
        watchdog.daemon = True
        watchdog.start()
        late = f"no complete answer within {timeout:g} s"
        try:
            with conn.http.stream(method, path, json=body, extensions={"trace": conn.trace}) as resp:
                data = bytearray()
                for chunk in resp.iter_bytes():
                    data += chunk
                    if time.monotonic() > deadline:
                        raise _TimedOut(late)
                    if len(data) > MAX_REPLY_BYTES:
                        raise ServerError(f"{server.label}{path} answered more than {MAX_REPLY_BYTES >> 20} MB; "
                                          "check that --server points at an inference server")
                # A body without a length ends when the connection closes: the watchdog's cut
                # ends it too, and what came before the cut is not the whole answer.
                if conn.cut_off:
                    raise _TimedOut(late)
                status = resp.status_code
        except httpx.HTTPError as exc:
            if conn.cut_off or time.monotonic() >= deadline:
                raise _TimedOut(late) from exc
            raise _Retryable(redact(f"{type(exc).__name__}: {exc}", server.secrets)) from exc
        finally:
            watchdog.cancel()
            if conn.cut_off:
                server.drop(conn)
        raw = bytes(data).decode("utf-8", "replace")

        def shown(n: int) -> str:
            # the reply may echo the request's credentials back: masked in every message built from it
            return redact(raw[:n + 1000], server.secrets)[:n]

        if status in RETRY_STATUS:
            raise _Retryable(f"HTTP {status}")
        if status >= 400:
            # the server answered: it is up, and refused this request
            raise ServerError(redact_url(f"{server.label}{path} refused the request (HTTP {status}): {shown(300)}"),
                              status=status)
        try:
            out = json.loads(raw)
        except (ValueError, RecursionError):
            raise ServerError(redact_url(f"{server.label}{path} did not answer JSON: {shown(200)!r}")) from None
        if not isinstance(out, dict):
            raise ServerError(redact_url(f"{server.label}{path} answered {shown(200)!r}, not a JSON object; "
                                         "check that --server points at an inference server"))
        return out

    def _with_retries(self, server: Server, method: str, path: str, body: dict | None, timeout: float) -> dict:
        delay, attempt = self.backoff, 0
        while True:
            self.stats.requests += 1
            server.requests += 1
            try:
                out = self._once(server, method, path, body, timeout)
                server.mark_up()
                return out
            except _Retryable as exc:
                server.last_error = str(exc)
                if attempt == self.retries or isinstance(exc, _TimedOut):
                    raise
            attempt += 1
            self.stats.retries += 1
            time.sleep(delay)
            delay *= 2

    def request(self, method: str, path: str, body: dict | None = None, *, server: Server | None = None,
                probe: bool = False) -> dict:
        """Send one request (to ``server``, or this thread's server), moving it on failure.

        A request that gets no complete answer within the fleet's ``timeout`` is not retried on
        that server. ``probe``: a start-up question (``/props``, ``/tokenize``, ``/v1/models``) that a
        working server answers at once, so it gets at most ``PROBE_TIMEOUT`` seconds.

        Returns the answer, a JSON object.

        Raises:
            ServerError: every server is down, a server refused the request (HTTP 4xx/500), or
                answered something that is not a JSON object.
        """
        timeout = min(self.timeout, PROBE_TIMEOUT) if probe else self.timeout
        pinned = server is not None
        server = server or self.server_for_thread()
        tried: set[str] = set()
        while True:
            try:
                return self._with_retries(server, method, path, body, timeout)
            except _Retryable as exc:
                server.mark_down(str(exc))
                tried.add(server.url)
                self.stats.errors.append(f"{server.label}: {exc}")
                if pinned:
                    raise ServerError(
                        f"{server.label} does not answer: {exc}; check that the server is running and "
                        "reachable from here, and that --server gives its address and port"
                    ) from None
                self.stats.failovers += 1
                self._release(server)
                self._local.server = None
                server = self._local.server = self._choose(frozenset(tried))

    def close(self) -> None:
        for s in self.servers:
            s.close()
