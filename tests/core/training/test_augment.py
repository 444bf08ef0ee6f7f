import numpy as np
import pytest
from scipy import ndimage

from napari_spotdetect.core.training.augment import affine_matrix, random_augment, warp

from ...conftest import separated_points


def _spot_image(shape=(150, 170), n=25, seed=0):
    """Sharp isolated Gaussian spots on zero background, so a spot's centroid is its position."""
    pts = separated_points(n, shape, margin=8, min_distance=12, seed=seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    img = sum(np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.5 ** 2)) for y, x in pts)
    return img.astype(np.float32), pts


def _centroid(img, p, r=4):
    y0, x0 = np.rint(p).astype(int)
    win = img[y0 - r:y0 + r + 1, x0 - r:x0 + r + 1].astype(np.float64)
    win = np.clip(win - 0.05 * win.max(), 0, None)
    cy, cx = ndimage.center_of_mass(win)
    return np.array([y0 - r + cy, x0 - r + cx])


@pytest.mark.parametrize("seed", range(8))
def test_spots_follow_the_image(seed):
    img, pts = _spot_image()
    out, moved = random_augment(img, pts, (128, 128), np.random.default_rng(seed), intensity_p=0.0)
    assert out.shape == (128, 128)
    inner = moved[(moved > 6).all(1) & (moved < 121).all(1)]
    assert len(inner) >= 3
    err = [np.hypot(*(_centroid(out, p) - p)) for p in inner]
    assert max(err) < 0.25, err


def test_quarter_turns_and_flips_move_pixels_exactly():
    img, pts = _spot_image((64, 64), n=6)
    rng = np.random.default_rng(5)
    seen = set()
    for _ in range(30):
        out, moved = random_augment(img, pts, (64, 64), rng, affine_p=0.0, intensity_p=0.0)
        # a quarter turn / flip of a same-size canvas is a permutation of the pixels: nothing is blurred
        assert sorted(out.ravel().tolist()) == pytest.approx(sorted(img.ravel().tolist()), abs=1e-5)
        r = np.rint(moved).astype(int)
        assert np.allclose(out[r[:, 0], r[:, 1]], img[tuple(np.rint(pts).astype(int).T)], atol=1e-5)
        seen.add(out.tobytes())
    assert len(seen) > 4  # rotations and flips really vary


def test_scale_changes_distances_by_the_scale():
    pts = np.array([[10.0, 10.0], [40.0, 30.0]])
    img = np.zeros((60, 60), np.float32)
    a = affine_matrix(1.2, 0.7)
    _, moved = warp(img, pts, (80, 80), a)
    assert np.hypot(*(moved[1] - moved[0])) == pytest.approx(1.2 * np.hypot(*(pts[1] - pts[0])))


def test_intensity_scaling_is_log_uniform_between_0_2_and_5():
    img, pts = _spot_image((64, 64), n=4)
    factors = []
    for s in range(200):
        out, _ = random_augment(img, pts, (64, 64), np.random.default_rng(s), affine_p=0.0, flip=False,
                                intensity_p=1.0)
        factors.append(np.ptp(out) / np.ptp(img))
    f = np.log(factors)
    assert np.exp(f.min()) >= 0.2 - 1e-6 and np.exp(f.max()) <= 5 + 1e-6
    assert abs(np.median(f)) < 0.3 and f.min() < np.log(0.3) and f.max() > np.log(3.5)


def test_spots_outside_the_crop_are_dropped():
    img, pts = _spot_image((300, 300), n=40)
    out, moved = random_augment(img, pts, (64, 64), np.random.default_rng(0), affine_p=0.0)
    assert len(moved) < len(pts)
    assert ((moved > -0.5) & (moved < 63.5)).all()
