"""Timing shared by both sides of the benchmark (plain Python: it runs in either environment)."""

import statistics
import time


def timed(fn, repeats):
    """(first run, median of the next ``repeats`` runs or None, last result); the first run is warm-up."""
    times, result = [], None
    for _ in range(repeats + 1):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times[0], (statistics.median(times[1:]) if repeats else None), result
