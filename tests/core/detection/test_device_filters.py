"""The second stage's filters as torch convolutions (core/detection/device_filters.py), checked on the CPU
against scipy's: the same maps to rounding, the same candidates and features."""

import numpy as np
import torch
from scipy import ndimage

from napari_spotdetect.core.detection.device_filters import band_maps
from napari_spotdetect.core.detection.proposals import (
    LOCAL_WINDOW,
    SIGMAS,
    candidate_features,
    log_response,
    log_stack,
)
from napari_spotdetect.core.detection.rescore import filter_device
from napari_spotdetect.core.training.synthetic import synthetic_image


def test_torch_maps_are_scipys_to_rounding():
    img, _ = synthetic_image((150, 97), n_spots=40, seed=7)  # odd sizes: the edges' reflections matter
    x = img.astype(np.float64)
    noise = 3.7
    got = band_maps(x, noise, SIGMAS, LOCAL_WINDOW, torch.device("cpu"))
    stack = log_stack(x / noise)
    resp = log_response(None, stack)
    hp = x - ndimage.gaussian_filter(x, 2.0)
    want = {"hp": hp, "stack": stack, "resp": resp,
            "local": np.sqrt(np.maximum(ndimage.uniform_filter(hp * hp, LOCAL_WINDOW, mode="reflect"), 0)),
            "smooth": ndimage.gaussian_filter(x, 1.0)}
    for k, v in want.items():
        assert got[k].shape == v.shape, k
        np.testing.assert_allclose(got[k], v, rtol=1e-10, atol=1e-10 * np.abs(v).max(), err_msg=k)


def test_candidates_filtered_with_torch_are_scipys():
    img, truth = synthetic_image((300, 260), n_spots=60, seed=8)
    yx = truth[:30] + 0.2
    net = np.linspace(0.1, 0.9, len(yx))
    a = candidate_features(img, yx, net, 2.0, 2.0, 1.5)
    b = candidate_features(img, yx, net, 2.0, 2.0, 1.5, device=torch.device("cpu"))
    assert len(a[0]) > len(yx)  # proposals too
    np.testing.assert_allclose(b[0], a[0], atol=1e-9)
    np.testing.assert_allclose(b[1], a[1], rtol=1e-8, atol=1e-9)
    assert (a[2]["edge"] == b[2]["edge"]).all()
    # detection filters on a CUDA model's GPU, else with scipy (MPS has no float64)
    assert filter_device(torch.device("cpu")) is None and filter_device(torch.device("mps")) is None
    assert filter_device(torch.device("cuda", 0)) == torch.device("cuda", 0)
