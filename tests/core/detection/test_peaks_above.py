"""The second stage's peak test at the pixels above a cut (core/detection/proposals.py) against the filter it
replaces: the same pixels, in the same order, on noise, plateaus (clipped spots tie exactly) and the edges."""

import numpy as np
import pytest
from scipy import ndimage

from napari_spotdetect.core.detection.proposals import peaks_above, window_max_at


def _maps():
    rng = np.random.default_rng(3)
    noise = rng.normal(size=(61, 47))
    plateau = np.round(ndimage.gaussian_filter(rng.normal(size=(40, 33)), 1.5) * 4) / 4  # many exact ties
    clipped = np.minimum(ndimage.gaussian_filter(rng.random((50, 50)) > 0.97, 1.2).astype(float) * 9, 1.0)
    return {"noise": noise, "plateau": plateau, "clipped": clipped}


@pytest.mark.parametrize("name", ["noise", "plateau", "clipped"])
@pytest.mark.parametrize("size", [3, 5])
def test_the_peaks_above_a_cut_are_those_of_the_maximum_filter(name, size):
    m = _maps()[name]
    where = np.ones(m.shape, dtype=bool)
    where[:5] = False  # a band's margin rows: their pixels are neighbours, never peaks
    for cut in (-np.inf, 0.0, 0.5):
        want = np.argwhere((m == ndimage.maximum_filter(m, size, mode="nearest")) & (m > cut) & where)
        got = peaks_above(m, cut, where, size)
        np.testing.assert_array_equal(got, want)
    assert len(peaks_above(m, -np.inf, None, size)) >= len(want)


def test_the_window_maximum_at_points_is_the_filters():
    m = _maps()["noise"]
    rc = np.argwhere(np.ones(m.shape, dtype=bool))  # every pixel, edges and corners included
    for size in (3, 5):
        np.testing.assert_array_equal(window_max_at(m, rc, size),
                                      ndimage.maximum_filter(m, size, mode="nearest")[rc[:, 0], rc[:, 1]])
