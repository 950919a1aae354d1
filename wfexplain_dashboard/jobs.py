"""Background jobs: run a training loop in a thread, read its progress, cancel it.

Used by the dashboard so a long run neither blocks the page nor outlives a cancel.
``fn(progress, should_stop)`` receives the same callbacks as the loops in
:mod:`wfexplain.engine`.

Server-wide limits (read from the environment): at most ``$WFEXPLAIN_MAX_JOBS`` jobs (default 1) run at
once in the process, whichever session started them (:data:`LIMITER`); :func:`dashboard.settings.job_caps`
bounds what a page may request (epochs, training images, unlearning steps).
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from .settings import MAX_JOBS


class ServerBusy(RuntimeError):
    """No job slot is free: the server already runs its maximum number of jobs."""

    def __init__(self, running: int):
        super().__init__(f"The server is busy: {running} job(s) running; try again when it finishes.")
        self.running = running


class JobLimiter:
    """At most ``limit`` jobs at once: a non-blocking bounded semaphore plus a count for messages."""

    def __init__(self, limit: int):
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self._running = 0

    @property
    def running(self) -> int:
        with self._lock:
            return self._running

    def acquire(self) -> None:
        """Take a slot now or raise :class:`ServerBusy`; never waits."""
        if not self._slots.acquire(blocking=False):
            raise ServerBusy(self.running)
        with self._lock:
            self._running += 1

    def release(self) -> None:
        with self._lock:
            self._running -= 1
        self._slots.release()


LIMITER = JobLimiter(MAX_JOBS)  # shared by every session of the server process


@dataclass
class JobState:
    step: int = 0
    total: int = 0
    metrics: dict = field(default_factory=dict)
    done: bool = False
    cancelled: bool = False
    error: str | None = None
    result: dict | None = None
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 0.0

    def elapsed(self, now: float | None = None) -> float:
        """Seconds since the job started (until it finished)."""
        end = self.finished if self.finished is not None else (time.perf_counter() if now is None else now)
        return end - self.started

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left at the pace so far (None before the first step: no pace yet)."""
        f = self.fraction
        return None if f <= 0 or self.done else self.elapsed(now) * (1 - f) / f


def duration(seconds: float) -> str:
    """``35 s``, ``3.2 min``, ``1.4 h``."""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


class Job:
    """A function running in a daemon thread with progress and cooperative cancellation.

    :meth:`start` takes a slot of ``limiter`` (default: the process-wide :data:`LIMITER`) or raises
    :class:`ServerBusy`; the slot is given back when the function returns, fails or is cancelled.
    """

    def __init__(self, fn: Callable[[Callable, Callable], dict], label: str, limiter: JobLimiter | None = None):
        self.label = label
        self._fn = fn
        self._limiter = limiter or LIMITER
        self._state = JobState()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"wfexplain-job-{label}", daemon=True)

    def start(self) -> Job:
        """Run the function in its thread; raises :class:`ServerBusy` when no job slot is free."""
        self._limiter.acquire()
        try:
            self._thread.start()
        except BaseException:
            self._limiter.release()
            raise
        return self

    def cancel(self) -> None:
        self._stop.set()

    def _progress(self, step: int, total: int, metrics: dict) -> None:
        with self._lock:
            self._state.step, self._state.total, self._state.metrics = step, total, dict(metrics)

    def _run(self) -> None:
        try:
            result = self._fn(self._progress, self._stop.is_set)
            with self._lock:
                self._state.result = result
                self._state.cancelled = bool(result.get("cancelled"))
        except Exception as e:  # reported to the user through the state
            with self._lock:
                self._state.error = f"{type(e).__name__}: {e}"
            traceback.print_exc()
        finally:
            self._limiter.release()  # before ``done``: a page that sees the job finished may start the next
            with self._lock:
                self._state.done = True
                self._state.finished = time.perf_counter()

    def state(self) -> JobState:
        """A consistent snapshot of the job's progress."""
        with self._lock:
            s = self._state
            return JobState(s.step, s.total, dict(s.metrics), s.done, s.cancelled, s.error, s.result,
                            s.started, s.finished)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)
