"""Background jobs: run a training loop in a thread, read its progress, cancel it.

Used by the dashboard so a long run neither blocks the page nor outlives a cancel.
``fn(progress, should_stop)`` receives the same callbacks as the loops in
:mod:`wfexplain.engine`; a report with a ``phase`` (:data:`wfexplain.history.PHASE`: validation, the final
evaluation) is a pause, shown as such and left out of the pace the ETA is computed from.

Server-wide limits (read from the environment): at most ``$WFEXPLAIN_MAX_JOBS`` jobs (default 1) run at
once in the process, whichever session started them (:data:`LIMITER`); :func:`dashboard.settings.job_caps`
bounds what a page may request (epochs, training images, unlearning steps). Every session sees every job of the
server on :data:`BOARD` (what, progress, when it started); only the session that started one, or whoever holds its
cancel token (a link the starting session was shown), can cancel it.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from wfexplain.history import FINAL, PHASE

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
    phase: str = ""  # the pause under way ("validation", "final evaluation"), "" while steps run
    paused: float = 0.0  # seconds spent in finished pauses
    pauses: int = 0  # finished pauses
    phase_started: float = 0.0

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 0.0

    def elapsed(self, now: float | None = None) -> float:
        """Seconds since the job started (until it finished)."""
        end = self.finished if self.finished is not None else (time.perf_counter() if now is None else now)
        return end - self.started

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left: the steps left at the pace so far, finished pauses included (as many come per step again, at
        their mean length), the pause under way left out. None before the first step (no pace yet), during the final
        evaluation (its length is not known) and once done."""
        if self.step <= 0 or not self.total or self.done or self.phase == FINAL:
            return None
        now = time.perf_counter() if now is None else now
        pausing = now - self.phase_started if self.phase else 0.0
        return max(0.0, (self.elapsed(now) - pausing) / self.step * (self.total - self.step))

    def describe(self, now: float | None = None) -> str:
        """``step 40/100 · 1.2 min elapsed · about 2 min left`` (or "starting…", "validation…", "final evaluation…")."""
        if not self.total:
            return "starting…"
        text = f"step {self.step}/{self.total} · {duration(self.elapsed(now))} elapsed"
        if self.phase:
            text += f" · {self.phase}…"
        eta = self.eta(now)
        if eta is not None:
            text += f" · about {duration(eta)} left"
        return text


def duration(seconds: float) -> str:
    """``35 s``, ``3.2 min``, ``1.4 h``."""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


class Job:
    """A function running in a daemon thread with progress and cooperative cancellation.

    :meth:`start` takes a slot of ``limiter`` (default: the process-wide :data:`LIMITER`) or raises
    :class:`ServerBusy`; the slot is given back when the function returns, fails or is cancelled.
    """

    def __init__(self, fn: Callable[[Callable, Callable], dict], label: str, limiter: JobLimiter | None = None,
                 owner: str = "", board: JobBoard | None = None):
        self.label = label
        self.owner = owner  # the id of the session that started it ("": none known)
        self.token = secrets.token_urlsafe(12)  # whoever holds it may cancel (a link shown to the owner)
        self.started_at = time.time()  # wall clock, for "started 14:02"
        self._fn = fn
        self._limiter = limiter or LIMITER
        self._board = board if board is not None else BOARD
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
        self._board.add(self)
        return self

    def cancel(self) -> None:
        self._stop.set()

    def may_cancel(self, session: str = "", token: str = "") -> bool:
        """Whether ``session`` started this job or ``token`` is its cancel token."""
        same = bool(token) and secrets.compare_digest(token.encode(), self.token.encode())  # any text, constant time
        return bool(session and session == self.owner) or same

    @property
    def cancelling(self) -> bool:
        return self._stop.is_set()

    def _progress(self, step: int, total: int, metrics: dict) -> None:
        now = time.perf_counter()
        with self._lock:
            s = self._state
            phase = str(metrics.get(PHASE, ""))
            if s.phase and phase != s.phase:  # a pause ended
                s.paused += now - s.phase_started
                s.pauses += s.phase != FINAL
            if phase and phase != s.phase:
                s.phase_started = now
            s.phase = phase
            s.step, s.total = step, total
            s.metrics = {k: v for k, v in metrics.items() if k != PHASE}

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
            return dataclasses.replace(s, metrics=dict(s.metrics))

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)


class JobBoard:
    """Every job of the server process, for every session to see: those running and those that finished in the last
    :attr:`keep` seconds (so a job started from a tab that was closed is still seen, and its outcome too)."""

    def __init__(self, keep: float = 900.0):
        self.keep = keep
        self._lock = threading.Lock()
        self._jobs: list[Job] = []

    def add(self, job: Job) -> None:
        with self._lock:
            self._jobs.append(job)

    def jobs(self, now: float | None = None) -> list[Job]:
        """Running jobs and recently finished ones, oldest first (older finished ones are forgotten here)."""
        now = time.perf_counter() if now is None else now
        with self._lock:
            self._jobs = [j for j in self._jobs if (f := j.state().finished) is None or now - f < self.keep]
            return list(self._jobs)


BOARD = JobBoard()  # shared by every session of the server process
