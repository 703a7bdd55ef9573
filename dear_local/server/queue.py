"""A FIFO work queue with worker threads: the only threads that touch the model.

llama.cpp contexts are not thread-safe, so with a local model every rerank runs on
one worker thread, one at a time, in arrival order. With a server backend the model
is on inference servers, and ``workers`` threads run that many requests at once.
The queue protects the server:

- at most ``max_pending`` jobs wait behind the running ones; ``submit`` raises
  ``QueueFull`` (carrying a ``retry_after`` estimate) beyond that;
- ``abandon`` drops a waiting job (its client left or timed out) before it runs,
  and flags a running one so it can stop at its next checkpoint;
- ``close`` refuses new work, cancels what is waiting and lets the running jobs
  finish before the workers exit;
- ``wait_estimate`` guesses how long a new job would wait, so a request with a
  deadline it cannot meet is refused at once.

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


@dataclass(eq=False)  # identity: jobs live in a set while they run
class Job:
    fn: Callable[[Callable[[], bool]], Any]
    future: Future = field(default_factory=Future)
    abandoned: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.monotonic)
    deadline_at: float | None = None  # monotonic seconds by which its result is no longer wanted
    started: float | None = None  # monotonic seconds when a worker took it


@dataclass
class QueueStats:
    completed: int = 0  # ran and returned (successfully or with an error)
    dropped: int = 0  # abandoned before they ran
    abandoned_running: int = 0  # abandoned while running
    rejected: int = 0  # refused because the queue was full


class WorkQueue:
    def __init__(self, max_pending: int, name: str = "dear-local-worker", workers: int = 1) -> None:
        self.max_pending = max_pending
        self.name = name
        self.workers = max(1, workers)
        self.stats = QueueStats()
        self._pending: deque[Job] = deque()
        self._running: set[Job] = set()
        self._cond = threading.Condition()
        self._closed = False
        self._threads: list[threading.Thread] = []
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
            return bool(self._running)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def worker(self) -> threading.Thread | None:
        return self._threads[0] if self._threads else None

    def _wait_estimate(self) -> int:
        ahead = len(self._pending) + len(self._running)
        return max(1, math.ceil(self._mean_seconds * max(ahead, 1) / self.workers))

    def wait_estimate(self, overrun: float = 0.0) -> float:
        """Seconds a job submitted now would wait before a worker takes it (0 with a worker free).

        Each job ahead counts the running mean of job durations, less what a running one has
        already run, and no more than the time left to its own deadline; the sum is shared
        among the workers. A running job past its deadline is still finishing a step it cannot
        stop mid-way (a window in llama.cpp): it counts ``overrun`` seconds (the caller's guess
        of one step) instead of nothing.
        """
        with self._cond:
            if len(self._running) < self.workers and not self._pending:
                return 0.0
            now = time.monotonic()
            ahead = 0.0
            for job in [*self._running, *self._pending]:
                left = self._mean_seconds - (now - job.started if job.started is not None else 0.0)
                if job.deadline_at is not None:
                    left = min(left, job.deadline_at - now)
                    if job.started is not None and job.deadline_at <= now:
                        left = overrun
                ahead += max(left, 0.0)
            return ahead / self.workers

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the mean job time times the jobs ahead, over the workers."""
        with self._cond:
            return self._wait_estimate()

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> None:
        with self._cond:
            if self._closed:
                raise QueueClosed("the queue is closed")
            if not self._threads:
                for i in range(self.workers):
                    thread = threading.Thread(target=self._work, name=f"{self.name}-{i}", daemon=True)
                    thread.start()
                    self._threads.append(thread)

    def close(self, timeout: float | None = None) -> None:
        """Take no new work, cancel waiting jobs, and wait for the running ones to finish."""
        with self._cond:
            self._closed = True
            while self._pending:
                job = self._pending.popleft()
                job.future.cancel()
            self._cond.notify_all()
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    # -- work -----------------------------------------------------------------
    def submit(self, fn: Callable[[Callable[[], bool]], Any], deadline_at: float | None = None) -> Job:
        """Queue ``fn``; raise ``QueueFull`` or ``QueueClosed`` instead of waiting.

        ``deadline_at`` (monotonic seconds) bounds how long the job counts in :meth:`wait_estimate`.
        """
        if not self._threads:
            self.start()
        with self._cond:
            if self._closed:
                raise QueueClosed("the server is shutting down")
            idle = len(self._running) < self.workers and not self._pending
            if len(self._pending) >= self.max_pending and not idle:
                self.stats.rejected += 1
                raise QueueFull(len(self._pending), self._wait_estimate())
            job = Job(fn, deadline_at=deadline_at)
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
            elif job in self._running:
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
                self._running.add(job)
                job.started = started = time.monotonic()
            try:
                result = job.fn(job.abandoned.is_set)
            except BaseException as exc:  # handed to the waiting request, never lost
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)
            finally:
                with self._cond:
                    self._running.discard(job)
                    self.stats.completed += 1
                    self._seen += 1
                    took = time.monotonic() - started
                    # Mean over the last ~20 jobs.
                    weight = 1 / min(self._seen, 20)
                    self._mean_seconds += weight * (took - self._mean_seconds)
