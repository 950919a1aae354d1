"""Timing helper shared by the perf scripts: the median of repeated calls after one warm-up."""

import statistics
import time


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
