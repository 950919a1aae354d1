"""The panel of a session's background :class:`~dashboard.jobs.Job` (training, unlearning, a benchmark), and the
server's job list every session sees.

While the job runs: a progress bar polled every second (a fragment, so the page around it stays
still), Cancel, and a link that can follow and cancel it from another tab. Once it is done: the page is redrawn
once, then its outcome and Clear. Jobs share the server's job slots (:data:`dashboard.jobs.LIMITER`):
:func:`start_job` says when none is free. :func:`server_jobs` lists every job of the server (the sidebar draws it),
with Cancel for the session that started one or a session opened with its link (``?job=TOKEN``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import streamlit as st

from wfexplain_dashboard.jobs import BOARD, Job, JobState, ServerBusy

from .text import escape_markdown, public_text

TOKEN = "_job_token"  # session-state key: the ?job= token this session was opened with


def session_id() -> str:
    """This session's id (the owner recorded on the jobs it starts; "" outside a script run)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else ""


def job_link(job: Job) -> str:
    """A link to this server that shows ``job`` in the sidebar with its Cancel (``?job=TOKEN``)."""
    return f"{st.context.url or '/'}?job={job.token}"  # st.context.url carries no query


def running(key: str) -> bool:
    """Whether the session's job under ``st.session_state[key]`` is still running."""
    job: Job | None = st.session_state.get(key)
    return job is not None and not job.state().done


def start_job(key: str, job: Job) -> bool:
    """Start ``job`` and keep it under ``st.session_state[key]``; False (and an error shown) when the server is busy."""
    job.owner = job.owner or session_id()
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
            st.progress(s.fraction, text=f"{job.label}: {s.describe()}{what}")
            if job.cancelling:
                st.caption("Cancelling: it stops at its next step.")
            elif st.button("Cancel", key=f"{key}_cancel"):
                job.cancel()
            st.caption("To follow or cancel it from another tab (or after closing this one), keep this link:")
            st.code(job_link(job), language=None, wrap_lines=True)
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


def server_jobs() -> None:
    """Every job of this server: what, progress, when it started; Cancel where this session may (it started the job,
    or was opened with its link). Polled every 2 s while one runs."""
    jobs = BOARD.jobs()
    if not jobs:
        return
    live = any(not j.state().done for j in jobs)

    @st.fragment(run_every=2.0 if live else None)
    def board() -> None:
        me, token = session_id(), st.session_state.get(TOKEN, "")
        shown = BOARD.jobs()
        running = sum(not j.state().done for j in shown)
        with st.expander(f"Jobs on this server ({running} running)", expanded=bool(token)):
            for j in shown:
                s = j.state()
                state = ("failed" if s.error else "cancelled" if s.cancelled else "done") if s.done else s.describe()
                mine = " (yours)" if j.owner and j.owner == me else ""
                # labels are markdown the starting page made safe (class names escaped; a user checkpoint's name
                # is limited to letters, digits, ".", "_" and "-")
                st.markdown(f"**{j.label}**{mine} · started {time.strftime('%H:%M', time.localtime(j.started_at))} · "
                            f"{state}")
                if not s.done:
                    st.progress(s.fraction)
                    if j.may_cancel(me, token) and not j.cancelling and st.button("Cancel", key=f"board_{j.token}"):
                        j.cancel()

    board()
