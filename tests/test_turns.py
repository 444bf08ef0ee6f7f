"""``benchmarks/turns.py``: every job runs once per round, and no job always goes first."""

from __future__ import annotations

import sys

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

from turns import save_turns, take_turns


def test_each_job_runs_once_a_round_in_a_rotated_order():
    order = []
    times, loads = take_turns({k: (lambda k=k: order.append(k)) for k in "abc"}, repeats=3)
    assert order == list("abc" "bca" "cab")
    assert all(len(v) == 3 and min(v) >= 0 for v in times.values()) and len(loads) == 9


def test_a_run_is_saved_with_its_load_and_fields(tmp_path, capsys):
    res = save_turns(tmp_path / "sub" / "run.json", 2, 3, [0.5, 1.5, 1.0], rows=[{"a": 1}])
    import json

    saved = json.loads((tmp_path / "sub" / "run.json").read_text())
    assert saved == res and saved["load"] == {"min": 0.5, "median": 1.0, "max": 1.5} and saved["rows"] == [{"a": 1}]
    assert "2 thread(s), median of 3; load 0.5-1.5" in capsys.readouterr().out
