import numpy as np
import pytest
from scipy import ndimage

from napari_spotdetect.core.detection import contrast
from napari_spotdetect.core.detection.contrast import contrast_features, elbow


def _scene(shape=(300, 260), n_bright=40, n_dim=400, seed=0):
    """Bright spots on a noisy background with many dim puncta (texture) that should not count."""
    rng = np.random.default_rng(seed)
    img = 200.0 + rng.normal(0, 5.0, shape)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    bright = rng.uniform(8, np.array(shape) - 8, (n_bright, 2))
    for cy, cx in bright:
        img += rng.uniform(400, 800) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.3**2))
    dim = rng.uniform(3, np.array(shape) - 3, (n_dim, 2))
    for cy, cx in dim:
        r0, r1, c0, c1 = int(cy) - 4, int(cy) + 5, int(cx) - 4, int(cx) + 5
        img[r0:r1, c0:c1] += rng.uniform(15, 40) * np.exp(
            -((yy[r0:r1, c0:c1] - cy) ** 2 + (xx[r0:r1, c0:c1] - cx) ** 2) / (2 * 1.0**2))
    return img, bright


def test_bands_give_the_whole_plane_filters(monkeypatch):
    img, bright = _scene()
    monkeypatch.setattr(contrast, "BAND_ROWS", 64)  # several bands, and a last short one
    at, peaks, vals, noise = contrast_features(img, bright)
    sm = ndimage.gaussian_filter(img, contrast.SMOOTH_SIGMA)
    bg = ndimage.percentile_filter(img, contrast.BACKGROUND_PERCENTILE, size=contrast.BACKGROUND_SIZE)
    rc = np.rint(bright).astype(int)
    np.testing.assert_allclose(at * noise, (sm - bg)[rc[:, 0], rc[:, 1]], rtol=1e-5, atol=1e-4)
    is_peak = sm == ndimage.maximum_filter(sm, contrast.PEAK_SIZE)
    np.testing.assert_array_equal(np.sort(peaks[:, 0] * 10_000 + peaks[:, 1]),
                                  np.sort(np.flatnonzero(is_peak) // img.shape[1] * 10_000 +
                                          np.flatnonzero(is_peak) % img.shape[1]))
    np.testing.assert_allclose(vals * noise, (sm - bg)[peaks[:, 0], peaks[:, 1]], rtol=1e-5, atol=1e-4)
    assert 4.0 < noise < 6.0  # drawn with sd 5


def test_lazy_planes_give_the_same_numbers():
    dask_array = pytest.importorskip("dask.array")
    img, bright = _scene(seed=1)
    eager = contrast_features(img, bright)
    lazy = contrast_features(dask_array.from_array(img, chunks=(50, 130)), bright)
    for a, b in zip(eager, lazy, strict=True):
        np.testing.assert_allclose(a, b)


def test_a_given_high_pass_gives_the_same_numbers_bit_for_bit(monkeypatch):
    img, bright = _scene(seed=3)
    monkeypatch.setattr(contrast, "BAND_ROWS", 64)  # its bands' core rows are the whole plane's
    own = contrast_features(img, bright)
    given = contrast_features(img, bright, highpass=img - ndimage.gaussian_filter(img, 2.0))
    for a, b in zip(own, given, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_elbow_sits_between_the_texture_and_the_spots():
    img, bright = _scene(seed=2)
    at, _, vals, _ = contrast_features(img, bright)
    e = elbow(vals)
    dim_max = np.quantile(vals[vals < np.quantile(at, 0.05)], 0.99)
    assert dim_max < e <= np.quantile(at, 0.1), (dim_max, e, np.quantile(at, 0.1))
    assert np.isnan(elbow(np.array([5.0, 6.0])))  # too few peaks to say
