"""The second stage's CPU filters through one FFT (core/detection/fft_filters.py): scipy's maps to rounding on
any plane shape, and the same candidates and features as the scipy filters gave."""

import numpy as np
import pytest
from scipy import ndimage

from napari_spotdetect.core.detection import fft_filters, proposals
from napari_spotdetect.core.detection.proposals import LOCAL_WINDOW, SIGMAS, candidate_features, log_stack
from napari_spotdetect.core.training.synthetic import synthetic_image


def scipy_maps(x, noise, sigmas, local_window, workers=1, hp=None, spectrum=None):
    """The maps as scipy's separable filters give them (what the second stage ran before the FFT)."""
    hp = x - ndimage.gaussian_filter(x, fft_filters.HIGHPASS_SIGMA) if hp is None else hp
    stack = np.stack([-ndimage.gaussian_laplace(x / noise, s) * s * s for s in sigmas])
    local = np.sqrt(np.maximum(ndimage.uniform_filter(hp * hp, local_window, mode="reflect"), 0))
    return {"hp": hp, "stack": stack, "resp": stack.max(0), "local": local,
            "smooth": ndimage.gaussian_filter(x, fft_filters.SMOOTH_SIGMA)}


@pytest.mark.parametrize("shape", [(150, 97), (5, 37), (1, 1), (64, 3)])
def test_maps_are_scipys_to_rounding_on_any_shape(shape):
    # odd sizes and planes narrower than the widest kernel's reach (16 px): the mirrored edges must match
    rng = np.random.default_rng(3)
    x = rng.normal(200.0, 9.0, shape)
    x[: max(1, shape[0] // 3), : max(1, shape[1] // 4)] = 4095.0  # a clipped plateau
    noise = 3.7
    got = fft_filters.band_maps(x, noise, SIGMAS, LOCAL_WINDOW, workers=2)
    want = scipy_maps(x, noise, SIGMAS, LOCAL_WINDOW)
    np.testing.assert_allclose(want["stack"], log_stack(x / noise), rtol=1e-14)  # the reference is the package's
    for k, v in want.items():
        assert got[k].shape == v.shape, k
        np.testing.assert_allclose(got[k], v, rtol=0, atol=1e-12 * max(np.abs(v).max(), 1.0), err_msg=k)
    np.testing.assert_allclose(fft_filters.highpass(x), want["hp"], rtol=0, atol=1e-12 * np.abs(x).max())


def test_candidates_and_features_are_those_of_scipys_filters(monkeypatch):
    img, truth = synthetic_image((300, 260), n_spots=80, seed=8)
    img = img.astype(np.float64)
    img[40:44, 50:55] = img.max()  # a saturated spot: a plateau the LoG's single scales see a rim of
    yx = truth[:40] + 0.3
    net = np.linspace(0.05, 0.95, len(yx))
    fast = candidate_features(img, yx, net, 2.0, 2.0, 1.5)
    monkeypatch.setattr(proposals.fft_filters, "band_maps", scipy_maps)
    monkeypatch.setattr(proposals.fft_filters, "band_spectrum", lambda x, sigmas, workers=1: None)
    monkeypatch.setattr(proposals.fft_filters, "highpass",
                        lambda x, workers=1, spectrum=None: x - ndimage.gaussian_filter(x, 2.0))
    slow = candidate_features(img, yx, net, 2.0, 2.0, 1.5)
    assert len(slow[0]) > len(yx)  # proposals too
    assert len(fast[0]) == len(slow[0])
    np.testing.assert_allclose(fast[0], slow[0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(fast[1], slow[1], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(fast[2]["contrast"], slow[2]["contrast"], rtol=1e-9, atol=1e-9)
    assert (fast[2]["edge"] == slow[2]["edge"]).all() and (fast[2]["hot_pixel"] == slow[2]["hot_pixel"]).all()
