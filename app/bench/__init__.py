"""Benchmarks (not tests): each prints figures and ends with one JSON line.

    python -m app.bench --json          the engine (app/bench/engine.py)
    python scripts/bench_app.py --json  the app through a launched server (app/bench/server.py)
"""
