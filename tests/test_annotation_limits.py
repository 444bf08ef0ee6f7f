import numpy as np
import pytest
from benchmarks.annotation_limits import (
    centroid_oracle,
    count_window,
    spot_contrast,
    unannotated_contrast,
)

from tests.conftest import gaussian_spots


def _gauss_spots(shape, centres, amplitudes, sigma=1.2, noise=10.0, seed=0):
    rng = np.random.default_rng(seed)
    return gaussian_spots(shape, centres, amplitudes, sigma, 500.0 + rng.normal(0, noise, shape))


@pytest.fixture(scope="module")
def grid():
    """A 6 x 6 grid of spots whose brightness rises from 3x to 100x the noise."""
    centres = np.array([(12.3 + 20 * i, 11.6 + 20 * j) for i in range(6) for j in range(6)])
    amps = np.geomspace(30, 1000, len(centres))
    return _gauss_spots((124, 124), centres, amps), centres, amps


def test_contrast_grows_with_brightness_and_is_in_noise_units(grid):
    img, centres, amps = grid
    c = spot_contrast(img, centres)
    assert np.all(np.diff(c) > -3.0)  # monotone up to noise
    # a Gaussian of sigma 1.2 smoothed by sigma 1 keeps ~0.59 of its peak; noise 10
    np.testing.assert_allclose(c[-5:], amps[-5:] * 0.59 / 10.0, rtol=0.25)


def test_peaks_left_out_of_the_annotation_are_found_with_their_contrast(grid):
    img, centres, amps = grid
    left_out = [35, 20]  # the brightest spot and a middle one are not annotated
    annotated = np.delete(centres, left_out, axis=0)
    u = unannotated_contrast(img, annotated)
    assert np.sum(u > 5) == 2  # exactly the two left-out spots stand out; noise maxima stay below
    np.testing.assert_allclose(np.sort(u)[-2:], np.sort(spot_contrast(img, centres[left_out])), rtol=1e-9)


def test_count_window_says_which_cuts_count_the_annotation():
    annotated = np.array([50.0] * 10)
    unannotated = np.array([5.0] * 100)  # many dim peaks that annotators did not count
    lo, hi = count_window(annotated, unannotated, 10)
    assert 5.0 < lo <= 5.5 and 47.0 <= hi <= 50.0  # any cut between the dim peaks and the spots
    # annotators who counted dim spots too: no single cut serves both definitions
    assert count_window(np.array([5.0] * 10), np.array([50.0] * 100), 10) is None


def test_the_centroid_oracle_charges_annotations_that_sit_off_the_centres(grid):
    img, centres, _ = grid
    exact = centroid_oracle(img, centres)
    rng = np.random.default_rng(1)
    scattered = centroid_oracle(img, centres + rng.normal(0, 0.7, centres.shape))
    assert exact > 0.9
    assert scattered < exact - 0.1
