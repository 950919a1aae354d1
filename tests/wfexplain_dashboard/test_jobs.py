import threading
import time

import pytest

from wfexplain_dashboard import jobs, settings
from wfexplain_dashboard.jobs import Job, JobLimiter, ServerBusy


def test_job_reports_progress_and_result():
    def fn(progress, should_stop):
        for i in range(1, 4):
            progress(i, 3, {"loss": 1.0 / i})
        return {"cancelled": False, "value": 42}

    job = Job(fn, "t").start()
    job.join(5)
    s = job.state()
    assert s.done and not s.cancelled and s.error is None
    assert (s.step, s.total, s.fraction) == (3, 3, 1.0)
    assert s.result["value"] == 42 and s.metrics == {"loss": 1 / 3}


def test_job_cancel_is_cooperative():
    def fn(progress, should_stop):
        step = 0
        while not should_stop():
            step += 1
            progress(step, 10**9, {})
            time.sleep(0.001)
        return {"cancelled": True}

    job = Job(fn, "c").start()
    time.sleep(0.05)
    job.cancel()
    job.join(5)
    s = job.state()
    assert s.done and s.cancelled and s.step > 0


def test_job_error_is_captured():
    def fn(progress, should_stop):
        raise ValueError("unknown dataset 'x'")

    job = Job(fn, "e").start()
    job.join(5)
    assert job.state().error == "ValueError: unknown dataset 'x'"


# ---------------------------------------------------------------- the process-wide limiter


def blocking(started: threading.Event, release: threading.Event, fail: bool = False):
    def fn(progress, should_stop):
        started.set()
        while not release.wait(0.005):
            if should_stop():
                return {"cancelled": True}
        if fail:
            raise RuntimeError("boom")
        return {"cancelled": False}
    return fn


@pytest.mark.parametrize("ending", ["finish", "error", "cancel"])
def test_second_start_is_refused_until_the_first_ends(ending):
    limiter = JobLimiter(1)
    started, release = threading.Event(), threading.Event()
    first = Job(blocking(started, release, fail=ending == "error"), "first", limiter).start()
    assert started.wait(5) and limiter.running == 1
    second = Job(lambda p, s: {"cancelled": False}, "second", limiter)
    with pytest.raises(ServerBusy, match=r"The server is busy: 1 job\(s\) running; try again when it finishes\."):
        second.start()
    assert limiter.running == 1
    if ending == "cancel":
        first.cancel()
    else:
        release.set()
    first.join(5)
    s = first.state()
    assert s.done and (s.error is not None) == (ending == "error") and s.cancelled == (ending == "cancel")
    assert limiter.running == 0
    second.start().join(5)  # the slot is free again
    assert second.state().done and limiter.running == 0


def test_limiter_counts_across_jobs_and_default_is_one(monkeypatch):
    limiter = JobLimiter(2)
    started, release = threading.Event(), threading.Event()
    a = Job(blocking(started, release), "a", limiter).start()
    b = Job(blocking(threading.Event(), release), "b", limiter).start()
    with pytest.raises(ServerBusy, match="2 job"):
        Job(lambda p, s: {}, "c", limiter).start()
    release.set()
    a.join(5)
    b.join(5)
    assert limiter.running == 0
    assert jobs.LIMITER.limit == 1  # WFEXPLAIN_MAX_JOBS unset
    monkeypatch.setenv("WFEXPLAIN_MAX_JOBS", "0")
    with pytest.raises(ValueError, match="WFEXPLAIN_MAX_JOBS"):
        settings.env_int("WFEXPLAIN_MAX_JOBS", 1)


def test_jobs_use_the_process_wide_limiter_by_default(monkeypatch):
    limiter = JobLimiter(1)
    monkeypatch.setattr(jobs, "LIMITER", limiter)
    limiter.acquire()
    with pytest.raises(ServerBusy):
        Job(lambda p, s: {}, "x").start()
    limiter.release()
    Job(lambda p, s: {"cancelled": False}, "x").start().join(5)
    assert limiter.running == 0


def test_job_state_reports_elapsed_time_and_an_eta_at_the_pace_so_far():
    from wfexplain_dashboard.jobs import JobState, duration

    s = JobState(step=25, total=100, started=0.0)
    assert s.elapsed(now=10.0) == 10.0 and s.eta(now=10.0) == 30.0  # 25% in 10 s: 30 s left
    assert JobState(step=0, total=100, started=0.0).eta(now=5.0) is None  # no pace yet
    done = JobState(step=100, total=100, started=0.0, done=True, finished=12.0)
    assert done.elapsed(now=99.0) == 12.0 and done.eta() is None
    assert [duration(x) for x in (35, 192, 7200)] == ["35 s", "3.2 min", "2.0 h"]
    assert JobState(total=0).describe() == "starting…"  # not "step 0/0"


def test_pauses_are_said_and_left_out_of_the_pace():
    """A validation pause of 20 s after 10 of 100 steps done in 10 s: the steps' pace is 1 s each; one more pause
    of 20 s is expected per 10 steps, so 90 steps left are 90 s plus 9 pauses of 20 s."""
    from wfexplain.history import FINAL
    from wfexplain_dashboard.jobs import JobState

    s = JobState(step=10, total=100, started=0.0, phase="validation", phase_started=10.0)
    assert s.eta(now=30.0) == pytest.approx(90.0)  # during the pause: none counted yet
    assert "validation…" in s.describe(now=30.0)
    after = JobState(step=10, total=100, started=0.0, paused=20.0, pauses=1)
    assert after.eta(now=30.0) == pytest.approx(90.0 + 9 * 20.0)
    final = JobState(step=100, total=100, started=0.0, phase=FINAL, phase_started=50.0)
    assert final.eta(now=80.0) is None and final.describe(now=80.0).endswith("final evaluation…")  # never "0 s left"


def test_a_jobs_phase_reports_are_timed_as_pauses():
    from wfexplain.history import PHASE

    release = threading.Event()

    def fn(progress, should_stop):
        progress(1, 4, {"loss": 1.0})
        progress(1, 4, {"loss": 1.0, PHASE: "validation"})
        time.sleep(0.05)
        progress(2, 4, {"loss": 0.5})
        progress(4, 4, {PHASE: "final evaluation"})
        release.wait(5)
        return {"cancelled": False}

    job = Job(fn, "p", limiter=JobLimiter(1), board=jobs.JobBoard()).start()
    deadline = time.monotonic() + 5
    while job.state().phase != "final evaluation" and time.monotonic() < deadline:
        time.sleep(0.01)
    s = job.state()
    assert s.pauses == 1 and s.paused >= 0.05 and s.metrics == {} and s.eta() is None
    release.set()
    job.join(5)


def test_every_session_sees_the_servers_jobs_and_only_the_owner_or_the_link_cancels():
    board, started, release = jobs.JobBoard(keep=60), threading.Event(), threading.Event()
    job = Job(blocking(started, release), "user/run", limiter=JobLimiter(2), owner="session-a", board=board).start()
    started.wait(5)
    assert board.jobs() == [job]
    assert job.may_cancel(session="session-a") and job.may_cancel(token=job.token)
    assert not job.may_cancel(session="session-b") and not job.may_cancel(token="x" * 16) and not job.may_cancel()
    assert not job.may_cancel(token="é" + job.token[1:])  # any text from a URL: refused, never a TypeError
    release.set()
    job.join(5)
    assert board.jobs() == [job]  # finished: still listed (a closed tab's job and its outcome are seen) ...
    assert board.jobs(now=job.state().finished + 61) == []  # ... until it is older than ``keep``


@pytest.mark.slow
def test_the_sidebar_lists_another_sessions_job_with_cancel_only_by_its_link(monkeypatch, open_app, assert_clean):
    board, started, release = jobs.JobBoard(), threading.Event(), threading.Event()
    monkeypatch.setattr(jobs, "BOARD", board)
    from wfexplain_dashboard import job_panel

    monkeypatch.setattr(job_panel, "BOARD", board)
    job = Job(blocking(started, release), "user/other", limiter=JobLimiter(1), owner="someone-else",
              board=board).start()
    try:
        started.wait(5)
        at = open_app()
        assert_clean(at)
        assert any(e.label == "Jobs on this server (1 running)" for e in at.sidebar.expander)
        assert any("**user/other** · started" in m.value for m in at.sidebar.markdown)
        assert not [b for b in at.sidebar.button if b.label == "Cancel"]  # not this session's job
        linked = open_app(job=job.token)
        assert "job" not in linked.query_params  # not left in the address bar for a shared view to hand on
        (cancel,) = [b for b in linked.sidebar.button if b.label == "Cancel"]
        cancel.click().run()
        assert_clean(linked)
        job.join(5)
        assert job.state().cancelled
    finally:
        release.set()
