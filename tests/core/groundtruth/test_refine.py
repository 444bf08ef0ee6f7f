import numpy as np
import pytest

from napari_spotdetect.core.groundtruth.refine import snap_points, snap_to_spot
from napari_spotdetect.core.training.synthetic import synthetic_image


@pytest.fixture(scope="module")
def scene():
    return synthetic_image((128, 128), n_spots=25, seed=3, amplitude=(400, 900), min_distance=8)


@pytest.mark.parametrize("offset", [(0.0, 0.0), (1.4, -0.9), (-1.0, 1.0), (0.5, 1.5)])
def test_click_near_a_spot_snaps_to_its_centre(scene, offset):
    image, truth = scene
    clicks = truth + np.array(offset)
    snapped = snap_points(image, clicks, radius=2.0)
    err = np.hypot(*(snapped - truth).T)
    assert np.median(err) < 0.2 and err.max() < 0.5, err
    assert np.median(np.hypot(*(clicks - truth).T)) > np.median(err) or offset == (0.0, 0.0)


def test_click_on_empty_background_stays_close():
    rng = np.random.default_rng(0)
    flat = 100 + rng.normal(0, 1, (40, 40))
    p = snap_to_spot(flat, (20.0, 20.0), radius=2.0)
    assert np.hypot(*(p - 20.0)) <= 2.0 + 1e-9


def test_click_at_the_image_edge_is_safe():
    img = np.zeros((20, 20))
    img[0, 0] = 10
    p = snap_to_spot(img, (0.3, 0.6))
    assert np.allclose(p, (0, 0), atol=0.5)


def test_click_near_a_clipped_spot_snaps_to_the_centre_of_its_flat_top():
    """8-bit renders and saturated cameras clip bright spots into flat tops wider than the centroid window."""
    yy, xx = np.mgrid[0:64, 0:64]
    centre = np.array([30.3, 33.6])
    spot = 40 + 600 * np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * 2.5 ** 2))
    plane = np.minimum(spot, 255).round()
    assert (plane == 255).sum() > 20
    for offset in ((1.2, -0.9), (-1.0, 1.1), (0.0, 0.0)):
        snapped = snap_to_spot(plane, centre + offset)
        assert np.linalg.norm(snapped - centre) < 0.2, (offset, snapped)
