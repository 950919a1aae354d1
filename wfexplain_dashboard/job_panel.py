"""The panel of a session's background :class:`~dashboard.jobs.Job` (training, unlearning, a benchmark).

While the job runs: a progress bar polled every second (a fragment, so the page around it stays
still) and Cancel. Once it is done: the page is redrawn once, then its outcome and Clear. Jobs
share the server's job slots (:data:`dashboard.jobs.LIMITER`): :func:`start_job` says when none is free.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from wfexplain_dashboard.jobs import Job, JobState, ServerBusy, duration

from .text import escape_markdown, public_text


def running(key: str) -> bool:
    """Whether the session's job under ``st.session_state[key]`` is still running."""
    job: Job | None = st.session_state.get(key)
    return job is not None and not job.state().done


def start_job(key: str, job: Job) -> bool:
    """Start ``job`` and keep it under ``st.session_state[key]``; False (and an error shown) when the server is busy."""
    try:
        st.session_state[key] = job.start()
    except ServerBusy as e:
        st.error(str(e))
        return False
    return True


def job_panel(key: str, success: Callable[[Job, JobState], str], failure: str = "The run failed",
              cancelled: str = "Cancelled: nothing was written.") -> None:
    """Show the job stored under ``st.session_state[key]``; ``success(job, state)`` words a finished run."""
    busy = running(key)

    @st.fragment(run_every=1.0 if busy else None)  # poll only while the job runs
    def panel() -> None:
        job: Job | None = st.session_state.get(key)
        if job is None:
            return
        s = job.state()
        if not s.done:
            what = "".join(f" · {k} {v:.3g}" if isinstance(v, float) else f" · {k} {v}" for k, v in s.metrics.items())
            eta = s.eta()
            timing = f" · {duration(s.elapsed())} elapsed" + (f" · about {duration(eta)} left" if eta is not None else "")
            st.progress(s.fraction, text=f"{job.label}: step {s.step}/{s.total}{timing}{what}")
            if st.button("Cancel", key=f"{key}_cancel"):
                job.cancel()
            return
        if busy:  # finished since the last full run: redraw the whole page (re-enables forms, stops polling)
            st.rerun(scope="app")
        if s.error:
            st.error(f"{failure}: {escape_markdown(public_text(s.error), 1000)}")  # no server paths, no markup from data
        elif s.cancelled:
            st.warning(cancelled)
        else:
            st.success(success(job, s))
        if st.button("Clear", key=f"{key}_clear"):
            del st.session_state[key]
            st.rerun(scope="app")

    panel()
