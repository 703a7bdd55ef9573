"""A FIFO work queue with one worker thread: the only thread that touches the model.

llama.cpp contexts are not thread-safe, so every rerank runs on the worker
thread, one at a time, in arrival order. The queue protects the server:

- at most ``max_pending`` jobs wait behind the running one; ``submit`` raises
  ``QueueFull`` (carrying a ``retry_after`` estimate) beyond that;
- ``abandon`` drops a waiting job (its client left or timed out) before it runs,
  and flags a running one so it can stop at its next checkpoint;
- ``close`` refuses new work, cancels what is waiting and lets the running job
  finish before the worker exits.

A job is a callable taking one argument, ``abandoned()``, which returns True
once nobody wants the result any more.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable


class QueueFull(Exception):
    """Too many jobs are waiting; try again after ``retry_after`` seconds."""

    def __init__(self, pending: int, retry_after: int) -> None:
        super().__init__(f"{pending} requests are already waiting; retry in {retry_after} s")
        self.pending = pending
        self.retry_after = retry_after


class QueueClosed(Exception):
    """The queue is shutting down and takes no new work."""


class Abandoned(Exception):
    """Raised inside a job that noticed nobody wants its result any more."""


@dataclass
class Job:
    fn: Callable[[Callable[[], bool]], Any]
    future: Future = field(default_factory=Future)
    abandoned: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.monotonic)


@dataclass
class QueueStats:
    completed: int = 0  # ran and returned (successfully or with an error)
    dropped: int = 0  # abandoned before they ran
    abandoned_running: int = 0  # abandoned while running
    rejected: int = 0  # refused because the queue was full


class WorkQueue:
    def __init__(self, max_pending: int, name: str = "dear-local-worker") -> None:
        self.max_pending = max_pending
        self.name = name
        self.stats = QueueStats()
        self._pending: deque[Job] = deque()
        self._running: Job | None = None
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._mean_seconds = 1.0  # running mean of job durations, for Retry-After
        self._seen = 0

    # -- state ----------------------------------------------------------------
    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._running is not None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def worker(self) -> threading.Thread | None:
        return self._thread

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the mean job time times the jobs ahead."""
        with self._cond:
            ahead = len(self._pending) + (self._running is not None)
            return max(1, math.ceil(self._mean_seconds * max(ahead, 1)))

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> None:
        with self._cond:
            if self._closed:
                raise QueueClosed("the queue is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()

    def close(self, timeout: float | None = None) -> None:
        """Take no new work, cancel waiting jobs, and wait for the running one to finish."""
        with self._cond:
            self._closed = True
            while self._pending:
                job = self._pending.popleft()
                job.future.cancel()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- work -----------------------------------------------------------------
    def submit(self, fn: Callable[[Callable[[], bool]], Any]) -> Job:
        """Queue ``fn``; raise ``QueueFull`` or ``QueueClosed`` instead of waiting."""
        if self._thread is None:
            self.start()
        with self._cond:
            if self._closed:
                raise QueueClosed("the server is shutting down")
            if len(self._pending) >= self.max_pending and (self._running is not None or self._pending):
                self.stats.rejected += 1
                ahead = len(self._pending) + (self._running is not None)
                raise QueueFull(len(self._pending), max(1, math.ceil(self._mean_seconds * ahead)))
            job = Job(fn)
            self._pending.append(job)
            self._cond.notify()
            return job

    def abandon(self, job: Job) -> None:
        """Nobody wants ``job``'s result: drop it if it waits, flag it if it runs."""
        job.abandoned.set()
        with self._cond:
            if job in self._pending:
                self._pending.remove(job)
                job.future.cancel()
                self.stats.dropped += 1
            elif job is self._running:
                self.stats.abandoned_running += 1

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return  # closed and drained
                job = self._pending.popleft()
                if not job.future.set_running_or_notify_cancel():
                    continue
                self._running = job
            started = time.monotonic()
            try:
                result = job.fn(job.abandoned.is_set)
            except BaseException as exc:  # handed to the waiting request, never lost
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)
            finally:
                with self._cond:
                    self._running = None
                    self.stats.completed += 1
                    self._seen += 1
                    took = time.monotonic() - started
                    # Mean over the last ~20 jobs.
                    weight = 1 / min(self._seen, 20)
                    self._mean_seconds += weight * (took - self._mean_seconds)
