"""Benchmarks (not tests): each prints figures and ends with one JSON line.

    python -m app.bench --json          the engine (app/bench/engine.py)
    python scripts/bench_app.py --json  the app through a launched server (app/bench/server.py)
"""
import json


def report(figures: dict, json_only: bool) -> None:
    """Print the figures, one a line (unless json_only), then all of them as one JSON line."""
    if not json_only:
        for k, v in figures.items():
            print(f"{k:>24}: {v}")
    print(json.dumps(figures))
