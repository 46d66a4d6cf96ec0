"""A stop flag and a deadline per request, checked by the engine at every unit of work.

The engine calls `check()` at every forward pass of an attacked model (app/attacks/__init__.py,
ForwardCounter), every purification step (app/flows/pipeline.py) and every chunk of text encoding
(app/clip/zeroshot.py). It raises `Cancelled` once the request's flag is set (the client cancelled or
went away, and the stream was closed) and `OverBudget` once the request has run past its time
limit. Outside a request (tests, scripts, the evaluator) no budget is active and `check()` costs
one context-variable read.

The active budget lives in a context variable, set around each unit of engine work with
`active(budget)`: Gradio resumes a streamed endpoint in whichever worker thread is free, so a
request's budget is passed along explicitly and re-activated on every resume (see `activate_each`).
"""
from __future__ import annotations

import contextvars
import threading
import time
from contextlib import contextmanager
from typing import Iterator, TypeVar

from app.common.errors import CLIPureError

T = TypeVar("T")


class Cancelled(CLIPureError):
    """The request was cancelled (or its client went away) while it ran."""


class OverBudget(CLIPureError):
    """The request ran past its time limit."""


# What to lower, in the order that saves the most time.
ADVICE = ("lower the attack steps or the purification steps, use fewer class names or the single template set, "
          "or pick a smaller backbone")


class Budget:
    """One request's stop flag and deadline. `seconds=None` means no deadline.

    A child budget (an attack's worker thread) has its own flag and also stops with its parent.
    """

    def __init__(self, seconds: float | None = None, parent: "Budget | None" = None):
        self.seconds = seconds
        self.deadline = None if seconds is None else time.monotonic() + seconds
        self.parent = parent
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set() or (self.parent is not None and self.parent.stopped)

    def check(self) -> None:
        """Raise Cancelled or OverBudget, else return."""
        if self.stopped:
            raise Cancelled("The request was cancelled.")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise OverBudget(f"The request ran past its {self.seconds:g} s time limit; {ADVICE}.")
        if self.parent is not None:
            self.parent.check()


_ACTIVE: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("clipure_budget", default=None)


def current() -> Budget | None:
    return _ACTIVE.get()


def check() -> None:
    """Check the active budget, if any (the engine's hook)."""
    budget = _ACTIVE.get()
    if budget is not None:
        budget.check()


@contextmanager
def active(budget: Budget | None):
    """Make `budget` the active one for the code inside (None leaves the current one)."""
    if budget is None:
        yield
        return
    token = _ACTIVE.set(budget)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def activate_each(budget: Budget | None, events: Iterator[T]) -> Iterator[T]:
    """Run each resume of the generator `events` with `budget` active; on close (the consumer
    cancelled or went away) stop the budget, so that work it started elsewhere stops too."""
    try:
        while True:
            with active(budget):
                try:
                    event = next(events)
                except StopIteration:
                    return
            yield event
    finally:
        if budget is not None:
            budget.stop()   # a no-op after a normal end; after a close, work started elsewhere stops
        events.close()
