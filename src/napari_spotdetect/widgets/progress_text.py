"""What a panel's status line says while a long run goes: which plane and tile, and the time left.

Plain text from plain numbers (no Qt), shared by the Detect and Fine-tune panels.
"""

from __future__ import annotations

import time


def plane_messages(gen):
    """Re-word the engine's tile progress as "plane k of n (t=.., z=..)" for stacks and time series.

    The engine's :class:`Progress` says which plane each tile batch belonged to (``plane``, ``where``).
    """
    while True:
        try:
            p = next(gen)
        except StopIteration as stop:
            return stop.value
        if p.total and p.done and p.plane is not None and p.n_planes > 1:
            where = ", ".join(f"{a}={i}" for a, i in p.where.items())
            p.message = f"plane {p.plane + 1} of {p.n_planes} ({where}) · tile {p.done} of {p.total}"
        elif p.total and p.done:
            p.message = f"tile {p.done} of {p.total}"
        yield p


class TimeLeft:
    """Time left from the pace of the work since the first finished step (loading the model and warming up
    come before it and made early guesses about 45 % high); shown once a few percent are done."""

    def __init__(self, now=time.perf_counter):
        self._now = now
        self._first: tuple[float, int] | None = None

    def left(self, done, total) -> str:
        if not total or done <= 0 or done >= total:
            return ""
        t = self._now()
        if self._first is None:
            self._first = (t, done)
            return ""
        t1, d1 = self._first
        if done <= d1 or done / total < 0.05 or t - t1 < 2.0:
            return ""
        return "about " + format_seconds((t - t1) * (total - done) / (done - d1)) + " left"


def format_seconds(s: float) -> str:
    """"45 s", "4 min 05 s", "2 h 10 min": rounded once, so 299.6 s is "5 min 00 s", never "4 min 60 s"."""
    s = int(round(max(0.0, float(s))))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    m = int(round(s / 60))
    return f"{m // 60} h {m % 60:02d} min"
