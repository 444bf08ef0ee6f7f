"""``benchmarks/rank_features.py``: its percentile-scaled LoG measure and its left-out-source fit."""

from __future__ import annotations

import sys

import numpy as np

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

from rank_features import left_out_separation, percentile_log


def _spot(img, cy, cx, a, s=1.3):
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    img += a * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))


def test_the_brighter_spot_answers_more_and_the_measure_ignores_the_image_units():
    img = np.full((64, 64), 100.0) + np.random.default_rng(0).normal(0, 2, (64, 64))
    _spot(img, 20, 20, 400.0)
    _spot(img, 40, 40, 80.0)
    at = np.array([[20.0, 20.0], [40.0, 40.0], [10.0, 50.0]])
    r = percentile_log(img, at)
    assert r[0] > r[1] > r[2]
    np.testing.assert_allclose(percentile_log(img * 7.0 + 30.0, at), r, rtol=1e-9, atol=1e-12)


def test_a_fit_on_the_other_sources_is_scored_on_the_left_out_one_only():
    rng = np.random.default_rng(1)
    n = 400
    src = np.repeat(np.array(["a", "b", "c"]), n)
    labels = (rng.random(3 * n) < 0.5).astype(float)
    good = labels + rng.normal(0, 0.3, 3 * n)  # ranks well everywhere
    flipped = np.where(src == "c", -1, 1) * (labels + rng.normal(0, 0.3, 3 * n))  # ranks backwards on c
    feats = np.column_stack([good, flipped])
    assert left_out_separation(feats[:, :1], labels, src, "c") > 0.95
    # fitted on a and b, the flipped measure looks good and is trusted: it ranks c worse than chance
    assert left_out_separation(feats[:, 1:], labels, src, "c") < 0.1
