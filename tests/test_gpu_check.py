"""The GPU check script's logic, run on the CPU with the CPU as its own reference: every section runs and
writes its JSON and table, and the device-vs-reference comparison calls identical spots identical (and
moved or missing spots not)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from .conftest import ROOT


def _script():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_spot_comparison_tells_identical_from_moved_and_missing():
    gc = _script()
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 500, (300, 2))
    same = gc.compare_spots(a[::-1].copy(), a)  # order does not matter
    assert same["identical"] and same["paired"] == 300 and same["max_diff_px"] == 0.0
    moved = a.copy()
    moved[7] += 0.05  # beyond the 0.01 px tolerance, still paired
    m = gc.compare_spots(moved, a)
    assert not m["identical"] and m["same_count"] and m["max_diff_px"] == pytest.approx(0.05 * np.sqrt(2))
    gone = gc.compare_spots(a[1:], a)
    assert not gone["identical"] and not gone["same_count"] and gone["paired"] == 299
    assert gc.compare_spots(np.zeros((0, 2)), np.zeros((0, 2)))["identical"]


@pytest.mark.slow
def test_gpu_check_runs_every_section_on_cpu_against_cpu(tmp_path):
    import torch

    gc = _script()
    out = tmp_path / "gpu_check.json"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CPU's automatic tile batch is one per thread (other tests may have set 2)
    try:
        gc.main(["--device", "cpu", "--reference-device", "cpu", "--quick", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    res = json.loads(out.read_text())
    assert {"environment", "parity", "throughput", "batch_autotune", "finetune", "zarr_stream", "targets"} <= set(res)
    assert res["environment"]["device"] == "cpu" and res["reference_device"] == "cpu"
    # both sides on the CPU: exact spots are the same spots, fast ones agree at F1 >= 0.99
    for row in res["parity"]:
        assert row["exact"]["identical"] and row["exact"]["n_a"] == row["exact"]["n_b"] > 0
        assert row["fast"]["ok"]
    assert res["targets"]["spots_identical_exact"] and res["targets"]["fast_f1_ok"]
    speeds = {(r["model"], r["speed"]) for r in res["throughput"]}
    assert {("default", "exact"), ("default", "fast")} <= speeds
    # the bundled model's second stage runs on the host's CPU: the network alone is timed too
    assert {("default, network only", "exact"), ("default, network only", "fast")} <= speeds
    assert all(r["megapixels_per_s"] > 0 and r["peak_gpu_mb"] is None for r in res["throughput"])
    assert [r["batch"] for r in res["batch_autotune"]["rows"]] == [1, 2, 4]
    assert res["batch_autotune"]["best_batch"] in (1, 2, 4) and res["batch_autotune"]["auto_batch"] == 1
    assert res["finetune"]["steps"] == 3 and res["finetune"]["steps_per_s"] > 0
    assert res["zarr_stream"]["size"] == 512 and res["zarr_stream"]["n_spots"] > 0
    table = out.with_suffix(".md").read_text()
    assert "| detect() 256^2, end to end | default | fast" in table and "zarr, streamed" in table
