"""Streaming an engine request: long work in a worker thread, so the stream keeps yielding.

Gradio can only stop a streamed request between two yields. `in_thread` runs one piece of work
(preparing a request, an attack, an audit) in a worker under a child of the request's budget
(app/common/budget.py), relays its progress and a heartbeat, and stops the worker when the stream is
closed. `EngineClock` separates the engine's time from the time a consumer spends per event.
"""
from __future__ import annotations

import contextvars
import queue
import threading
import time
from typing import Callable

from app.common import budget as budgets
from app.common.budget import Budget

HEARTBEAT_S = 0.25   # the attack stream yields at least this often, so a cancel can close it


def in_thread(work: Callable[[Callable[[object], None]], object], name: str):
    """Run work(report) in a worker thread; yield ("progress", value) for each report, ("tick", None)
    when HEARTBEAT_S passes without one, then ("done", result).

    The worker runs under a child of the request's budget, stopped when this generator ends for
    any reason (closed by a cancel, or abandoned): its next check then raises Cancelled. The
    stream keeps yielding meanwhile, so Gradio can close it.
    """
    q: queue.Queue = queue.Queue()
    stop = Budget(parent=budgets.current())
    context = contextvars.copy_context()

    def run():
        try:
            with budgets.active(stop):
                res = work(lambda value: q.put(("progress", value)))
            q.put(("done", res))
        except BaseException as e:  # re-raised in the caller's thread
            q.put(("error", e))

    worker = threading.Thread(target=context.run, args=(run,), name=name, daemon=True)
    worker.start()
    try:
        while True:
            try:
                kind, value = q.get(timeout=HEARTBEAT_S)
            except queue.Empty:
                kind, value = "tick", None
            if kind == "error":
                raise value
            yield kind, value
            if kind == "done":
                return
    finally:
        stop.stop()


class EngineClock:
    """Engine time: wall time minus the time the generator spends suspended at its yields,
    so that work a consumer does per event (plots, transport) is not counted as engine time."""

    def __init__(self):
        self.suspended = 0.0
        self.background = False   # True while the attack runs in its thread: suspension is not idle time

    def now(self) -> float:
        return time.perf_counter() - self.suspended
