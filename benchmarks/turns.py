"""Timing several ways of doing one job on a shared machine: each takes its turn in every round."""

from __future__ import annotations

import os
import time


def take_turns(jobs: dict, repeats: int, log: bool = False) -> tuple[dict, list]:
    """Run every job of ``jobs`` (name -> callable) once per round for ``repeats`` rounds, the order rotated each
    round so that none always goes first; returns (seconds per job, one per round) and the load average seen
    before each run. Why turns: the load of a shared machine drifts from minute to minute, and a job timed
    all in one block would take its minute's load with it."""
    times: dict = {k: [] for k in jobs}
    loads: list[float] = []
    names = list(jobs)
    for rep in range(repeats):
        k0 = rep % len(names)
        for k in names[k0:] + names[:k0]:
            loads.append(os.getloadavg()[0])
            t0 = time.perf_counter()
            jobs[k]()
            times[k].append(time.perf_counter() - t0)
            if log:
                print(f"round {rep + 1}: {str(k):14s} {times[k][-1]:.2f} s  load {loads[-1]:.1f}", flush=True)
    return times, loads


def save_turns(out, threads: int, repeats: int, loads: list, **fields) -> dict:
    """Write a run's JSON (date, threads, repeats, the load seen, and ``fields``) to ``out``, print its header
    line, and return it."""
    import datetime as dt
    import json
    from pathlib import Path

    import numpy as np

    res = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "threads": threads,
           "repeats": repeats, "load": {"min": min(loads), "median": float(np.median(loads)), "max": max(loads)},
           **fields}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(res, indent=2))
    print(f"\n{res['date']}, {threads} thread(s), median of {repeats}; load {res['load']['min']:.1f}-"
          f"{res['load']['max']:.1f}\n")
    return res
