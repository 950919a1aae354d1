"""Background jobs: run a training loop in a thread, read its progress, cancel it.

Used by the dashboard so a long run neither blocks the page nor outlives a cancel.
``fn(progress, should_stop)`` receives the same callbacks as the loops in
:mod:`wfexplain.engine`.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field


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


class Job:
    """A function running in a daemon thread with progress and cooperative cancellation."""

    def __init__(self, fn: Callable[[Callable, Callable], dict], label: str):
        self.label = label
        self._fn = fn
        self._state = JobState()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"wfexplain-job-{label}", daemon=True)

    def start(self) -> Job:
        self._thread.start()
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
