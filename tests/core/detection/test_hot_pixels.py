"""Hot pixels (core/detection/hot_pixels.py): a camera's single bright pixels are no spots, while spots as narrow
as a coarsely sampled PSF, clipped plateaus and dim specks are left to the score."""

import numpy as np

from napari_spotdetect.core.detection.detect import detect
from napari_spotdetect.core.detection.hot_pixels import hot_pixel_at
from tests.conftest import gaussian_spots, separated_points


def test_a_lone_bright_pixel_is_hot_and_a_narrow_spot_a_plateau_or_a_dim_speck_is_not():
    rng = np.random.default_rng(1)
    noise = 5.0
    # spots of sigma 0.5-1 px (0.5: coarser than Nyquist), anywhere within their pixel
    centres = np.array([[10.3, 10.0], [10.0, 30.4], [30.5, 10.5], [30.0, 30.0], [50.2, 49.7]])
    img = gaussian_spots((64, 64), centres, [400, 2000, 800, 300, 600], [0.5, 0.5, 0.6, 0.8, 1.0], 1000.0)
    img += rng.normal(0, noise, img.shape)
    img[50, 10] += 1500  # hot
    img[10, 50] += 5 * noise  # a spike, but within the noise: left to the score
    img[40:43, 20:23] = 4095  # a clipped plateau
    rc = np.vstack([np.rint(centres), [[50, 10], [10, 50], [41, 21], [40, 20]]])
    hot = hot_pixel_at(img, rc, noise)
    assert hot.tolist() == [False] * 5 + [True, False, False, False]
    # the same spike found from a neighbouring pixel (a candidate's rounding is off by one)
    assert hot_pixel_at(img, np.array([[49, 11], [51, 9]]), noise).all()
    assert hot_pixel_at(img, np.zeros((0, 2)), noise).shape == (0,)


def test_the_bundled_model_calls_no_hot_pixel_and_still_finds_the_spots_around_them(default_model):
    rng = np.random.default_rng(0)
    pts = separated_points(40, (160, 160), 8, 9.0, seed=3)
    centres, hot = pts[:28], np.rint(pts[28:]).astype(int)
    sigmas = rng.choice([0.7, 1.0, 1.5], len(centres))
    clean = gaussian_spots((160, 160), centres, rng.uniform(300, 1500, len(centres)), sigmas, 1000.0)
    clean = rng.poisson(clean).astype(np.float64)
    dirty = clean.copy()
    dirty[hot[:, 0], hot[:, 1]] += rng.uniform(500, 3000, len(hot))
    with_hot = detect(dirty.astype(np.uint16), default_model, keep_maps=False).spots[["y", "x"]].to_numpy()
    without = detect(clean.astype(np.uint16), default_model, keep_maps=False).spots[["y", "x"]].to_numpy()
    near_hot = [np.hypot(*(with_hot - h).T).min() < 2 for h in hot]
    assert not any(near_hot), f"{sum(near_hot)} of {len(hot)} hot pixels called spots"
    found = [np.hypot(*(with_hot - c).T).min() < 1.5 for c in centres]
    assert sum(found) >= len(centres) - 1 and len(with_hot) == len(without)


def test_a_hot_pixel_through_a_whole_z_stack_is_no_spot(default_model):
    """A hot pixel sits at the same camera pixel in every plane; the stack's spots are 3-D components."""
    rng = np.random.default_rng(2)
    pts = separated_points(14, (96, 96), 8, 10.0, seed=5)
    centres, hot = pts[:10], np.rint(pts[10:]).astype(int)
    zz, yy, xx = np.mgrid[:7, :96, :96]
    stack = np.full((7, 96, 96), 800.0)
    for (y, x), zc in zip(centres, rng.uniform(2, 4, len(centres))):
        stack += 900 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.2 ** 2) - (zz - zc) ** 2 / (2 * 1.5 ** 2))
    stack = rng.poisson(stack).astype(np.float64)
    stack[:, hot[:, 0], hot[:, 1]] += 2500
    spots = detect(stack.astype(np.uint16), default_model, axes="zyx", keep_maps=False).spots
    yx = spots[["y", "x"]].to_numpy()
    assert not any(np.hypot(*(yx - h).T).min() < 2 for h in hot)
    assert sum(np.hypot(*(yx - c).T).min() < 1.5 for c in centres) >= len(centres) - 1
