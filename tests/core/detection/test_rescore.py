"""The second stage (core/detection/rescore.py): proposals the network misses, calibrated scores, the model file."""

import numpy as np
import pytest
import torch

from napari_spotdetect._sample_data import smfish_2d
from napari_spotdetect.core.detection.detect import detect
from napari_spotdetect.core.detection.rescore import (
    FEATURES,
    Rescorer,
    auc,
    candidate_features,
    fit_boosted_trees,
    fit_logistic,
)
from napari_spotdetect.core.errors import ModelFileError
from napari_spotdetect.core.groundtruth.metrics import match_spots
from napari_spotdetect.core.models.zoo import load_model
from napari_spotdetect.core.weights.native import model_to_state


@pytest.fixture(scope="module")
def sample_detections(default_model):
    (img, _, _), (truth, _, _) = smfish_2d()
    return img, truth, detect(img, default_model, threshold=default_model.threshold_range[0])


def test_bundled_model_rescores_and_its_slider_reaches_well_below_its_default(default_model):
    assert default_model.rescorer is not None
    lo, hi = default_model.threshold_range
    assert lo <= default_model.default_threshold / 5 and hi == 1.0


def test_every_saturated_spot_of_the_2d_sample_is_found_at_the_default_threshold(default_model, sample_detections):
    """The sample's brightest spots are clipped plateaus the network alone scores near 0 (13 were missed); 18 of
    them share a plateau with one to three others (the last one missed was among them)."""
    from scipy import ndimage

    img, truth, det = sample_detections
    rc = np.rint(truth).astype(int)
    saturated = img[rc[:, 0], rc[:, 1]] >= img.max()
    assert saturated.sum() >= 20
    plateaus, _ = ndimage.label(img >= img.max())
    ids = plateaus[rc[saturated, 0], rc[saturated, 1]]
    assert (np.unique(ids, return_counts=True)[1] >= 4).any()  # four spots merged into one flat region
    spots = det.rethreshold(default_model.default_threshold)[["y", "x"]].to_numpy()
    assert match_spots(spots, truth[saturated], 3.0).tp == saturated.sum()
    # and each clipped spot once (:mod:`.plateaus`): its repeat calls made 54 of 241 calls false before
    assert match_spots(spots, truth, 3.0).precision >= 0.93
    every = match_spots(det.candidates[["y", "x"]].to_numpy(), truth, 3.0)
    assert every.tp >= 0.95 * len(truth)  # nearly every spot is a candidate at the lowest threshold


def test_rethresholding_a_rescored_detection_is_detecting_at_that_threshold(default_model, sample_detections):
    img, _, det = sample_detections
    direct = detect(img[:256, :256], default_model, threshold=0.6)
    low = detect(img[:256, :256], default_model, threshold=default_model.threshold_range[0])
    a = direct.spots[["y", "x", "score"]].to_numpy()
    b = low.rethreshold(0.6)[["y", "x", "score"]].to_numpy()
    np.testing.assert_allclose(a, b)
    scores = det.candidates["score"].to_numpy()
    assert scores.min() > default_model.threshold_range[0] and scores.max() <= 1.0


def test_a_flat_topped_spot_the_network_scores_zero_is_proposed():
    img = np.random.default_rng(0).normal(100, 3, (64, 64))
    yy, xx = np.mgrid[:64, :64]
    img += 900 * np.exp(-((yy - 30) ** 2 + (xx - 33) ** 2) / (2 * 3.0**2))
    img = np.minimum(img, 400)  # clipped: a 7-px plateau
    yx, feats, extra = candidate_features(img, np.zeros((0, 2)), np.zeros(0))
    near = np.hypot(yx[:, 0] - 30, yx[:, 1] - 33) < 1.5
    assert near.sum() == 1 and extra["is_proposal"][near].all()
    assert feats.shape == (len(yx), len(FEATURES)) and np.isfinite(feats).all()


def test_a_dim_spot_beside_a_bright_one_is_proposed_by_its_own_scale():
    """The best-scale LoG response of a bright, wide spot swallows a dim, sharp neighbour 6 px away (no peak
    of its own there); the single-scale peaks find it."""
    img = np.random.default_rng(2).normal(100, 2, (48, 48))
    yy, xx = np.mgrid[:48, :48]
    img += 3000 * np.exp(-((yy - 24) ** 2 + (xx - 18) ** 2) / (2 * 3.0**2))
    img += 200 * np.exp(-((yy - 24) ** 2 + (xx - 24) ** 2) / (2 * 1.0**2))

    def near_dim(**kw):
        yx, _, _ = candidate_features(img, np.zeros((0, 2)), np.zeros(0), **kw)
        return int((np.hypot(yx[:, 0] - 24, yx[:, 1] - 24) < 1.5).sum()), len(yx)

    assert near_dim(proposal_cut=2.0)[0] == 0
    found, n = near_dim(proposal_cut=2.0, scale_cut=2.0)
    assert found == 1 and n == 2  # one proposal there, not one per scale


def test_boosted_trees_rank_evidence_a_linear_model_cannot():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, len(FEATURES)))
    y = (np.abs(x[:, 2]) < 0.7).astype(float)  # true in a band of one feature: no weight can say it
    trees = fit_boosted_trees(x[:2000], y[:2000], n_trees=30, depth=2, min_leaf=20)
    z = trees.logit(x[2000:])
    assert auc(z[y[2000:] > 0], z[y[2000:] == 0]) > 0.95
    w, b, mean, scale = fit_logistic(x[:2000], y[:2000])
    lin = ((x[2000:] - mean) / scale) @ w
    assert auc(lin[y[2000:] > 0], lin[y[2000:] == 0]) < 0.6
    r = Rescorer(w, b, mean, scale, trees=trees)
    back = Rescorer.from_dict(r.to_dict())
    np.testing.assert_allclose(back.probability(x[2000:]), r.probability(x[2000:]))
    bad = r.to_dict()
    bad["trees"] = {**bad["trees"], "value": bad["trees"]["value"][:-1]}
    with pytest.raises(ValueError, match="trees are damaged"):
        Rescorer.from_dict(bad)


def test_logistic_fit_ranks_and_auc_counts_ties_half():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 2))
    y = (x[:, 0] + 0.2 * rng.normal(size=400) > 0).astype(float)
    w, b, mean, scale = fit_logistic(x, y)
    p = 1 / (1 + np.exp(-(((x - mean) / scale) @ w + b)))
    assert auc(p[y > 0], p[y == 0]) > 0.95 and abs(w[0]) > 5 * abs(w[1])
    assert auc(np.array([1.0, 1.0]), np.array([1.0])) == 0.5


def test_the_model_file_keeps_the_rescorer_and_old_files_still_load(default_model, tmp_path):
    state = model_to_state(default_model)
    assert state["rescore"]["features"] == list(FEATURES)
    path = tmp_path / "m.pt"
    torch.save(state, path)
    again = load_model(path)
    np.testing.assert_allclose(again.rescorer.weights, default_model.rescorer.weights)
    assert again.threshold_range == default_model.threshold_range
    old = {k: v for k, v in state.items() if k != "rescore"}
    torch.save(old, path)
    plain = load_model(path)
    assert plain.rescorer is None and plain.threshold_range[0] == 0.005
    bad = dict(state, rescore={**state["rescore"], "weights": [1.0]})
    torch.save(bad, path)
    with pytest.raises(ModelFileError, match="rescor"):
        load_model(path)


def test_rescorer_round_trips_through_a_dict():
    r = Rescorer(np.arange(len(FEATURES), dtype=float), 0.5, np.zeros(len(FEATURES)), np.ones(len(FEATURES)))
    back = Rescorer.from_dict(r.to_dict())
    np.testing.assert_array_equal(back.weights, r.weights)
    f = np.ones((3, len(FEATURES)))
    np.testing.assert_allclose(back.probability(f), r.probability(f))


def test_a_z_stack_finds_the_saturated_spots_its_network_misses(default_model):
    """In a stack the network's voxels make the spots; the sample's saturated spots (scored near 0 by the
    network in every plane) come back as the planes' proposals, one spot each, in the plane they are in."""
    (img, _, _), (truth, _, _) = smfish_2d()
    bg = np.median(img)
    dim = bg + (img - bg) * 0.4
    stack = np.stack([dim, img, dim]).astype(np.float32)  # the spots' in-focus plane in the middle
    rc = np.rint(truth).astype(int)
    saturated = truth[img[rc[:, 0], rc[:, 1]] >= img.max()]
    spots = detect(stack, default_model, axes="zyx").spots
    yx = spots[["y", "x"]].to_numpy()
    assert match_spots(yx, saturated, 3.0).tp == len(saturated)  # also the four of one merged plateau
    assert set(spots["z"]) == {1.0}  # the dim planes' proposals joined their spot's component
    m = match_spots(yx, truth, 3.0)
    assert m.tp >= 0.97 * len(truth) and len(yx) - m.tp <= 0.25 * len(truth)


def test_stack_proposals_touching_a_network_voxel_are_part_of_its_spot():
    import pandas as pd

    from napari_spotdetect.core.detection.rescore import merge_stack_proposals

    def vox(rows):
        z, r, c, s = np.array(rows, dtype=float).T
        return pd.DataFrame({"z": z.astype(np.int32), "row": r.astype(np.int32), "col": c.astype(np.int32),
                             "score": s, "dy": 0.0, "dx": 0.0, "intensity": 1.0})

    net = vox([(2, 10, 10, 0.9), (2, 10, 11, 0.0005)])  # a spot's voxel, and a neighbour kept for its offsets
    props = vox([(3, 11, 11, 0.5),  # the next plane, diagonal: the same spot
                 (2, 10, 11, 0.6),  # the neighbour's own voxel: stays the network's
                 (2, 10, 13, 0.4),  # 3 px away in the plane: a spot of its own
                 (0, 10, 10, 0.4),  # two planes away
                 (3, 11, 12, 0.3)])  # touches only the low neighbour (below the floor): its own
    out = merge_stack_proposals(net, props, 0.001, ["z", "row", "col"], (5, 20, 20))
    got = {tuple(v) for v in out[["z", "row", "col"]].to_numpy()[2:]}
    assert got == {(2, 10, 13), (0, 10, 10), (3, 11, 12)}


@pytest.mark.parametrize("keep", [True, False])
def test_the_second_stage_reads_a_large_plane_in_bands_with_the_whole_planes_numbers(default_model, monkeypatch,
                                                                                      keep):
    """A plane bigger than a band is never read whole by the second stage (its maps are ~110 bytes a pixel:
    29 GB for a 16384^2 plane at once); the candidates are those of the whole plane at once, positions exactly,
    scores to the rounding of a running sum. A plane up to KEEP_PIXELS keeps its bands from the first pass to the
    second (each read once there); a larger one reads them again: the same numbers."""
    from napari_spotdetect.core.detection import proposals, rescore

    (img, _, _), _ = smfish_2d()
    whole = detect(img, default_model, threshold=0.001).candidates
    reads = []

    class Lazy:  # a lazy plane that records the rows each read asks for
        shape, dtype, ndim = img.shape, img.dtype, 2

        def __getitem__(self, key):
            rows = key[0] if isinstance(key, tuple) else key
            if isinstance(rows, slice):
                reads.append((rows.start or 0, img.shape[0] if rows.stop is None else rows.stop))
            return img[key]

        def __array__(self, dtype=None, copy=None):
            raise AssertionError("the whole plane was read")

    from napari_spotdetect.core.detection import contrast

    monkeypatch.setattr(proposals, "BAND_PIXELS", 64 * img.shape[1])  # 64 rows a band: 8 bands
    monkeypatch.setattr(contrast, "BAND_ROWS", 64)  # (the contrast pass has bands of its own)
    monkeypatch.setattr(proposals, "KEEP_PIXELS", img.size if keep else img.size - 1)
    yx, prob, extra = rescore.rescore_candidates(default_model.rescorer, Lazy(), np.zeros((0, 2)), np.zeros(0))
    n_bands = len(proposals._row_bands(*img.shape))
    n_contrast = len(list(contrast._band_ranges(img.shape[0])))
    # first pass, second pass (unless kept), the contrast pass (its high-pass from the first pass when kept)
    assert len(reads) == n_bands * (1 if keep else 2) + n_contrast
    in_memory = rescore.rescore_candidates(default_model.rescorer, img, np.zeros((0, 2)), np.zeros(0))
    assert reads and max(b - a for a, b in reads) <= 64 + 2 * max(proposals.BAND_MARGIN, contrast._MARGIN)
    # the same candidates; positions and scores to rounding (each band's transform has a length of its own)
    np.testing.assert_allclose(yx, in_memory[0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(prob, in_memory[1], rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(extra["intensity"], in_memory[2]["intensity"])
    banded = detect(img, default_model, threshold=0.001).candidates
    np.testing.assert_allclose(banded[["y", "x"]].to_numpy(), whole[["y", "x"]].to_numpy(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(banded["score"], whole["score"], rtol=1e-9, atol=1e-12)


def test_a_large_planes_noise_sample_reads_every_column():
    """Above PLANE_SAMPLE pixels the noise comes from an even sample; its stride is prime to the width, so a
    camera's column pattern cannot select which columns speak for the plane."""
    from napari_spotdetect.core.detection import proposals

    for h, w in ((2048, 2048), (3000, 1500), (1024, 1024), (4096, 4100)):
        step = proposals._sample_step(h, w)
        assert h * w / step <= proposals.PLANE_SAMPLE * 1.01 or step == 1
        cols = (np.arange(0, h * w, step) % w)
        assert len(np.unique(cols)) == w
    assert proposals._sample_step(1024, 1024) == 1  # a 1024^2 plane: every pixel


def test_whether_a_planes_maximum_is_a_clip_is_counted_as_numpys_median_decides_it():
    """The plane's median only tells whether its maximum is a clip (above the median); a count answers that
    without a selection over a million pixels, and must answer exactly as ``top > np.median`` did: odd and even
    counts, half the pixels at the top, and an even count whose two middle values' mean rounds up to the top."""
    from napari_spotdetect.core.detection.proposals import median_below

    rng = np.random.default_rng(3)
    cases = []
    for n in (1, 2, 3, 4, 7, 10, 1001, 1000):
        for share in (0.0, 0.3, 0.5, 0.7, 1.0):  # of the values clipped at the top
            v = rng.normal(100, 10, n)
            v[rng.random(n) < share] = 400.0
            v[: n // 2] = np.where(share == 0.5, 400.0, v[: n // 2])  # exactly half at the top, even counts
            cases.append(np.minimum(v, 400.0))
    top = 1.0
    below = np.nextafter(top, 0.0)  # (below + top) / 2 rounds to top in float64
    cases += [np.array([below, top]), np.array([below, below, top, top]), np.array([0.5, top])]
    for v in cases:
        t = float(v.max())
        assert median_below(v, t) == bool(t > np.median(v)), (len(v), np.count_nonzero(v < t))
    assert not median_below(np.array([below, top]), top)  # numpy's median of the two is the top itself
