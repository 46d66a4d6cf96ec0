"""Benchmarks (not tests): each prints figures and ends with one JSON line.

    python -m app.bench --json          the engine (app/bench/engine.py)
    python scripts/bench_app.py --json  the app through a launched server (app/bench/server.py)
    python -m app.bench.memory --json   the server's RSS per /run request, after warm-up
    python -m app.bench.queue --json    /classify's latency idle and beside a long /run
"""
import json
import statistics
import time
from typing import Callable


def report(figures: dict, json_only: bool) -> None:
    """Print the figures, one a line (unless json_only), then all of them as one JSON line."""
    if not json_only:
        for k, v in figures.items():
            print(f"{k:>24}: {v}")
    print(json.dumps(figures))


def median_ms(fn: Callable[[], object], repeat: int, warmup: int = 2) -> float:
    """The median wall time of fn() over `repeat` calls, in ms, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)
