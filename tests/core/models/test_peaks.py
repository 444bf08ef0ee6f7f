"""Peak finding on the network's maps (core/models/ops.local_maxima): the maximum filter's pixels, sooner."""

import numpy as np
import pytest
from scipy import ndimage

from napari_spotdetect.core.models.ops import _thin_peaks, local_maxima


def _by_filter(score, floor, min_distance):
    """The definition, as a whole-map maximum filter (how it was computed before)."""
    size = 2 * min_distance + 1
    is_max = score == ndimage.maximum_filter(score, size=size, mode="nearest")
    if is_max.all():
        return np.zeros((0, 2), dtype=np.int64)
    peaks = np.argwhere(is_max & (score > floor))
    peaks = peaks[np.argsort(-score[peaks[:, 0], peaks[:, 1]], kind="stable")]
    return _thin_peaks(peaks, min_distance) if min_distance > 1 and len(peaks) > 1 else peaks


def _maps():
    rng = np.random.default_rng(3)
    spots = np.zeros((61, 77), np.float32)  # a pooled map: near 0, a few peaks, one touching each edge
    spots[rng.integers(0, 61, 40), rng.integers(0, 77, 40)] = rng.uniform(0.001, 1, 40)
    spots[0, 5] = spots[30, 0] = spots[60, 76] = 0.9
    plateau = np.round(rng.uniform(0, 1, (50, 40)), 1)  # many exact ties
    plateau[10:14, 10:14] = 1.0
    return [spots, ndimage.gaussian_filter(spots, 1.0), plateau, rng.normal(size=(33, 29))]


@pytest.mark.parametrize("min_distance", [1, 2])
@pytest.mark.parametrize("floor", [-np.inf, 0.0, 0.002, 0.5])
def test_peaks_are_the_maximum_filters_in_the_same_order(min_distance, floor):
    for score in _maps():
        np.testing.assert_array_equal(local_maxima(score, floor, min_distance), _by_filter(score, floor, min_distance))


def test_a_flat_or_empty_map_has_no_peaks():
    assert local_maxima(np.full((20, 30), 0.7), 0.0).shape == (0, 2)
    assert local_maxima(np.zeros((0, 5)), 0.0).shape == (0, 2)
    one = np.zeros((20, 30))
    one[4, 7] = 0.3
    np.testing.assert_array_equal(local_maxima(one, 0.0), [[4, 7]])
    assert local_maxima(one, 0.3).shape == (0, 2)  # strictly above the floor
