"""A fleet of inference servers: HTTP with timeouts, retries and failover.

Each server URL gets one :class:`Server` (an ``httpx`` client). A request that fails to
connect, times out, or gets 429/502/503/504 is retried on the same server with
exponential backoff (``retries`` times, from ``backoff`` seconds); when a server
still fails it is marked down for a cool-down (doubling on each failure in a row), and the
request moves to another server: every request carries its whole prompt, so any server
can take it. Only when every server is down does a request fail, with a
:class:`~dear_local.errors.ServerError` naming each server's last error.

Requests of one thread stick to one server (:meth:`Fleet.server_for_thread`), so the
steps of a window hit the server whose prefix cache holds its prompt; each new query
(:meth:`Fleet.rebind`) goes to the server with the fewest threads on it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from ..errors import ServerError

RETRY_STATUS = frozenset({429, 502, 503, 504})


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


class Server:
    """One server URL: an HTTP client, its health, and how many threads use it."""

    def __init__(self, url: str, *, timeout: float, api_key: str | None = None) -> None:
        import httpx

        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
                                   headers=headers)
        self.users = 0
        self.requests = 0  # requests sent to this server, retries included
        self.down_until = 0.0
        self.cooldown = 1.0
        self.last_error = ""

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
        self.client.close()


class _Retryable(Exception):
    pass


class Fleet:
    """The servers of a run; see the module docstring.

    ``urls``: one or more base URLs (``http://host:port``); ``timeout``: seconds per
    request; ``retries``: attempts after the first on one server; ``backoff``: seconds
    before the first retry, doubled each time.

    Raises:
        ServerError: no URL, or a URL that is not ``http://`` or ``https://``.
    """

    def __init__(self, urls: list[str], *, timeout: float = 120.0, retries: int = 3, backoff: float = 0.5,
                 api_key: str | None = None) -> None:
        if not urls:
            raise ServerError("no server given; pass --server http://HOST:PORT (repeat it for several)")
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ServerError(f"server {url!r} is not an http:// or https:// URL; pass e.g. --server http://127.0.0.1:8080")
        self.servers = [Server(u, timeout=timeout, api_key=api_key) for u in dict.fromkeys(urls)]
        self.retries, self.backoff = retries, backoff
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
                    + "; ".join(f"{s.url}: {s.last_error or 'down'}" for s in self.servers)
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

    def server_for_thread(self) -> Server:
        server = getattr(self._local, "server", None)
        if server is None or not server.up:
            self._release(server)
            server = self._local.server = self._choose()
        return server

    # -- requests --------------------------------------------------------------------
    def _once(self, server: Server, method: str, path: str, body: dict | None) -> dict:
        import httpx

        try:
            resp = server.client.request(method, path, json=body)
        except (httpx.TransportError, httpx.TimeoutException) as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        if resp.status_code in RETRY_STATUS:
            raise _Retryable(f"HTTP {resp.status_code}")
        if resp.status_code >= 400:
            # the server answered: it is up, and refused this request
            raise ServerError(f"{server.url}{path} refused the request (HTTP {resp.status_code}): {resp.text[:300]}",
                              status=resp.status_code)
        try:
            return resp.json()
        except ValueError:
            raise ServerError(f"{server.url}{path} did not answer JSON: {resp.text[:200]!r}") from None

    def _with_retries(self, server: Server, method: str, path: str, body: dict | None) -> dict:
        delay, attempt = self.backoff, 0
        while True:
            self.stats.requests += 1
            server.requests += 1
            try:
                out = self._once(server, method, path, body)
                server.mark_up()
                return out
            except _Retryable as exc:
                server.last_error = str(exc)
                if attempt == self.retries:
                    raise
            attempt += 1
            self.stats.retries += 1
            time.sleep(delay)
            delay *= 2

    def request(self, method: str, path: str, body: dict | None = None, *, server: Server | None = None) -> dict:
        """Send one request (to ``server``, or this thread's server), moving it on failure.

        Raises:
            ServerError: every server is down, or a server refused the request (HTTP 4xx/500).
        """
        pinned = server is not None
        server = server or self.server_for_thread()
        tried: set[str] = set()
        while True:
            try:
                return self._with_retries(server, method, path, body)
            except _Retryable as exc:
                server.mark_down(str(exc))
                tried.add(server.url)
                self.stats.errors.append(f"{server.url}: {exc}")
                if pinned:
                    raise ServerError(
                        f"{server.url} does not answer: {exc}; check that the server is running and "
                        "reachable from here, and that --server gives its address and port"
                    ) from None
                self.stats.failovers += 1
                self._release(server)
                self._local.server = None
                server = self._local.server = self._choose(frozenset(tried))

    def close(self) -> None:
        for s in self.servers:
            s.close()
