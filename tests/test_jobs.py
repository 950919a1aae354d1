import time

from wfexplain.jobs import Job


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
