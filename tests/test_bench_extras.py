"""``benchmarks/bench_extras.py``: the clipped-spot count it reports is right on a hand-made image."""

from __future__ import annotations

import sys

import numpy as np

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_extras import clipped_spot_recall


def test_clipped_spots_are_those_at_the_full_well_and_found_ones_are_matched():
    img = np.zeros((40, 40), np.float32)
    truth = np.array([[10.0, 10.0], [20.0, 20.0], [30.0, 30.0]])
    img[10, 10] = img[20, 20] = 5.0  # two spots at the full well
    img[30, 30] = 3.0
    assert clipped_spot_recall(np.array([[10.4, 9.8], [30.0, 30.0]]), img, truth, 3.0) == (1, 2)
    assert clipped_spot_recall(np.zeros((0, 2)), img, truth, 3.0) == (0, 2)
    assert clipped_spot_recall(truth, np.ones((40, 40), np.float32) * np.arange(40), truth[:1] * 0 + 5, 3.0) == (0, 0)
