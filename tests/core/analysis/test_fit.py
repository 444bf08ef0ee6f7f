"""Gaussian fits recover the spots we draw: sigma and amplitude within 10 %, centres within 0.1 px."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.special import ndtr

from napari_spotdetect.core.analysis.fit import fit_gaussians
from napari_spotdetect.core.analysis.measure import count_molecules, isolated, measure_spots
from napari_spotdetect.core.errors import SpotDetectError


def _profile(n, c, s):
    u = np.arange(n)
    return ndtr((u + 0.5 - c) / s) - ndtr((u - 0.5 - c) / s)


def draw(shape, centres, sigma, amplitude, background, seed=0):
    """Pixel-integrated Gaussians of peak ``amplitude`` on ``background``, with Poisson noise."""
    img = np.full(shape, float(background))
    sig = np.broadcast_to(np.atleast_1d(sigma), (len(centres), 1 if np.isscalar(sigma) else len(sigma)))
    amp = np.broadcast_to(np.asarray(amplitude, dtype=float), (len(centres),))
    for c, s, a in zip(centres, sig, amp):
        if len(shape) == 2:
            total = a * 2 * np.pi * s[-1] ** 2
            img += total * np.outer(_profile(shape[0], c[0], s[-1]), _profile(shape[1], c[1], s[-1]))
        else:
            sz, sl = s[0], s[-1]
            total = a * (2 * np.pi) ** 1.5 * sl * sl * sz
            img += total * (_profile(shape[0], c[0], sz)[:, None, None]
                            * np.outer(_profile(shape[1], c[1], sl), _profile(shape[2], c[2], sl))[None])
    return np.random.default_rng(seed).poisson(img).astype(np.float64)


def grid(n_side, spacing, offset, dims=2, seed=0):
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(*[np.arange(n_side)] * 2, indexing="ij"), -1).reshape(-1, 2) * spacing + offset
    return g + rng.uniform(-0.5, 0.5, g.shape)


def test_2d_fit_recovers_sigma_amplitude_and_centre_at_high_snr():
    truth = grid(8, 14, 9)
    img = draw((120, 120), truth, 1.3, 3000.0, 100.0)
    start = np.rint(truth)  # integer starting positions: the fit must find the sub-pixel centre itself
    df = fit_gaussians(img, start)
    assert list(df.columns) == ["y_fit", "x_fit", "amplitude", "sigma", "background", "integrated_intensity",
                                "snr", "fit_ok"]
    assert df["fit_ok"].all()
    assert np.abs(df[["y_fit", "x_fit"]].to_numpy() - truth).max() < 0.1
    assert np.abs(df["sigma"] / 1.3 - 1).max() < 0.10
    assert np.abs(df["amplitude"] / 3000 - 1).max() < 0.10
    assert abs(df["background"].median() / 100 - 1) < 0.05
    total = 3000 * 2 * np.pi * 1.3**2
    assert np.abs(df["integrated_intensity"] / total - 1).max() < 0.10
    # Poisson noise at the peak is about sqrt(3100) ~ 56: SNR of a few tens, not infinite or tiny
    assert 20 < df["snr"].median() < 150


def test_2d_fit_on_lower_snr_is_unbiased_on_average():
    truth = grid(10, 11, 7, seed=1)
    img = draw((116, 116), truth, 1.6, 300.0, 200.0, seed=1)
    df = fit_gaussians(img, np.rint(truth), sigma=1.2)
    assert abs(df["sigma"].median() / 1.6 - 1) < 0.05 and abs(df["amplitude"].median() / 300 - 1) < 0.05
    assert np.median(np.hypot(*(df[["y_fit", "x_fit"]].to_numpy() - truth).T)) < 0.2


def test_3d_fit_recovers_anisotropic_sigmas():
    yx = grid(4, 14, 8, seed=2)
    z = np.random.default_rng(2).uniform(6, 9, len(yx))
    truth = np.column_stack([z, yx])
    img = draw((16, 60, 60), truth, (2.2, 1.2), 2000.0, 80.0, seed=2)
    df = fit_gaussians(img, np.rint(truth), sigma=(1.5, 1.5))
    assert {"z_fit", "sigma_z"} <= set(df.columns) and df["fit_ok"].all()
    assert np.abs(df[["z_fit", "y_fit", "x_fit"]].to_numpy() - truth).max() < 0.1
    assert np.abs(df["sigma"] / 1.2 - 1).max() < 0.10
    assert np.abs(df["sigma_z"] / 2.2 - 1).max() < 0.10
    assert np.abs(df["amplitude"] / 2000 - 1).max() < 0.10


def test_spots_at_the_image_edge_are_fitted_from_the_pixels_inside():
    truth = np.array([[0.8, 30.2], [30.0, 119.1], [60.4, 60.3]])
    img = draw((120, 120), truth, 1.3, 3000.0, 100.0, seed=3)
    df = fit_gaussians(img, np.rint(truth))
    assert np.abs(df[["y_fit", "x_fit"]].to_numpy() - truth).max() < 0.15
    assert np.abs(df["sigma"] / 1.3 - 1).max() < 0.10


def test_measure_spots_fits_each_frame_in_its_own_plane_and_adds_micrometres():
    truth = grid(5, 16, 10, seed=4)
    frames = np.stack([draw((90, 90), truth, s, 2500.0, 100.0, seed=i) for i, s in enumerate((1.1, 1.9))])
    spots = pd.DataFrame({"t": np.repeat([0, 1], len(truth)), "y": np.tile(np.rint(truth[:, 0]), 2),
                          "x": np.tile(np.rint(truth[:, 1]), 2), "score": 0.9})
    out = measure_spots(frames, spots, axes="tyx", pixel_size=(0.5, 0.1, 0.1))
    assert len(out) == len(spots) and out["score"].eq(0.9).all()
    s0, s1 = out.loc[out.t == 0, "sigma"], out.loc[out.t == 1, "sigma"]
    assert np.abs(s0 / 1.1 - 1).max() < 0.1 and np.abs(s1 / 1.9 - 1).max() < 0.1
    np.testing.assert_allclose(out["x_um"], out["x_fit"] * 0.1)
    np.testing.assert_allclose(out["sigma_um"], out["sigma"] * 0.1)


def test_clusters_count_as_several_molecules():
    single = grid(6, 16, 10, seed=5)
    sites = np.array([[40.2, 40.3], [72.1, 56.6]])  # hidden among the singles, on a clear patch each
    single = single[np.min(np.hypot(*(single[:, None] - sites[None]).transpose(2, 0, 1)), axis=1) > 9]
    centres = np.vstack([single, sites])
    amp = np.r_[np.full(len(single), 1500.0), 3 * 1500.0, 5 * 1500.0]
    img = draw((110, 110), centres, 1.3, amp, 100.0, seed=5)
    fitted = measure_spots(img, pd.DataFrame({"y": np.rint(centres[:, 0]), "x": np.rint(centres[:, 1])}))
    counted, ref = count_molecules(fitted)
    assert ref == pytest.approx(1500 * 2 * np.pi * 1.3**2, rel=0.05)
    assert counted["molecules"].tolist() == [1] * len(single) + [3, 5]
    assert counted["cluster"].sum() == 2
    with pytest.raises(SpotDetectError, match="integrated_intensity"):
        count_molecules(pd.DataFrame({"y": [1.0], "x": [2.0]}))


def test_isolation_uses_the_z_step_and_frames():
    spots = pd.DataFrame({"z": [0, 1, 0], "y": [10.0, 10, 40], "x": [10.0, 10, 40], "t": [0, 0, 0]})
    assert isolated(spots, 3.0).tolist() == [False, False, True]
    # a z step of 5 lateral pixels puts the first two 5 px apart
    assert isolated(spots, 3.0, pixel_size=(0.5, 0.1, 0.1)).tolist() == [True, True, True]
    spots["t"] = [0, 1, 0]
    assert isolated(spots, 3.0).tolist() == [True, True, True]


def test_bad_input_says_how_to_fix_it():
    with pytest.raises(SpotDetectError, match="Fix:"):
        fit_gaussians(np.zeros((2, 3, 8, 8)), np.zeros((1, 4)))
    with pytest.raises(SpotDetectError, match="channel="):
        measure_spots(np.zeros((2, 16, 16)), pd.DataFrame({"y": [5.0], "x": [5.0]}), axes="cyx")
    with pytest.raises(SpotDetectError, match="no z"):
        measure_spots(np.zeros((4, 16, 16)), pd.DataFrame({"y": [5.0], "x": [5.0]}), axes="zyx")
    with pytest.raises(SpotDetectError, match="window"):
        fit_gaussians(np.zeros((16, 16)), np.ones((1, 2)), window=(1, 2, 3))
    empty = measure_spots(np.zeros((16, 16)), pd.DataFrame({"y": [], "x": []}))
    assert len(empty) == 0 and "sigma" in empty.columns


def test_flat_and_noise_only_windows_are_not_good_fits():
    rng = np.random.default_rng(0)
    for img in (np.zeros((40, 40)), np.full((40, 40), 7.0), rng.normal(100, 5, (40, 40))):
        df = fit_gaussians(img, np.array([[20, 20], [0, 0], [39, 39]]))
        assert not df.isna().any().any()
        assert df["fit_ok"].sum() <= 1  # noise may look like a faint spot now and then, flat images never
    assert not fit_gaussians(np.full((40, 40), 7.0), np.array([[20, 20]]))["fit_ok"].any()


def test_close_pairs_are_measured_one_by_one():
    alone = np.array([[20.3, 20.2], [20.1, 60.4]])
    pair = np.array([[60.2, 40.3], [64.4, 43.9]])  # 5.5 px apart: each is in the other's window
    centres = np.vstack([alone, pair])
    img = draw((90, 90), centres, 1.3, 1500.0, 100.0, seed=9)
    total = 1500.0 * 2 * np.pi * 1.3**2
    split = fit_gaussians(img, np.rint(centres))
    blend = fit_gaussians(img, np.rint(centres), split_neighbours=False)
    assert np.abs(split["integrated_intensity"] / total - 1).max() < 0.10
    assert np.abs(blend["integrated_intensity"].iloc[2:] / total - 1).max() > 0.10  # what splitting fixes
    assert np.abs(split[["y_fit", "x_fit"]].to_numpy() - centres).max() < 0.1
    # the neighbour's light left in the window lowers the SNR less than when it was fitted as a blend
    assert split["snr"].iloc[2:].min() > 2 * blend["snr"].iloc[2:].min()


def test_a_spot_outside_the_image_is_a_failed_fit_not_an_error():
    img = np.random.default_rng(0).normal(100, 5, (30, 30))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = fit_gaussians(img, np.array([[-10.0, -10.0], [15.0, 15.0]]))
    assert not df["fit_ok"].iloc[0] and np.isnan(df["snr"].iloc[0])
