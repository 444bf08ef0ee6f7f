"""``benchmarks/turns.py``: every job runs once per round, and no job always goes first."""

from __future__ import annotations

import sys

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

from turns import take_turns


def test_each_job_runs_once_a_round_in_a_rotated_order():
    order = []
    times, loads = take_turns({k: (lambda k=k: order.append(k)) for k in "abc"}, repeats=3)
    assert order == list("abc" "bca" "cab")
    assert all(len(v) == 3 and min(v) >= 0 for v in times.values()) and len(loads) == 9
