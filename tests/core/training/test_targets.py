import numpy as np
import pytest

from napari_spotdetect.core.errors import SpotDetectError
from napari_spotdetect.core.training.targets import DEEPSPOT_STAMP, deepspot_target, spot_labels, voronoi_targets

from ...conftest import SHARED, need_shared


def shared(*parts):
    return need_shared(SHARED.joinpath(*parts))


def test_voronoi_matches_piscis_fixture_exactly():
    d = np.load(shared("fixtures", "piscis", "img256_training_targets_and_losses.npz"))
    labels, deltas = voronoi_targets(d["gt_coords"], (256, 256), 1)
    assert labels.dtype == bool and deltas.dtype == np.float32
    np.testing.assert_array_equal(labels, d["labels"])
    np.testing.assert_array_equal(deltas, d["deltas"])  # bit for bit, ties included


def test_deltas_point_to_the_nearest_spot_on_a_non_square_image():
    rng = np.random.default_rng(0)
    coords = rng.uniform([0, 0], [36, 52], size=(9, 2))
    labels, deltas = voronoi_targets(coords, (37, 53), 1)
    yy, xx = np.mgrid[0:37, 0:53]
    target = np.stack([yy, xx], -1)[..., None, :] + 0.0
    d2 = ((np.rint(coords)[None, None] - target) ** 2).sum(-1)
    nearest = np.argmin(d2, axis=-1)
    # where the nearest spot is unique, the displacement points at its sub-pixel position
    unique = (d2 == d2.min(-1, keepdims=True)).sum(-1) == 1
    expect = coords[nearest] - np.stack([yy, xx], -1)
    np.testing.assert_allclose(np.moveaxis(deltas, 0, -1)[unique], expect[unique], atol=1e-5)
    assert labels.sum() <= 9 * 9 and labels[tuple(np.rint(coords).astype(int).T)].all()


def test_ties_go_to_the_spot_closest_to_its_pixel_centre():
    # two spots round to the same pixel: the one nearer to that pixel's centre wins everywhere
    coords = np.array([[5.4, 5.0], [5.1, 5.0]])
    _, deltas = voronoi_targets(coords, (11, 11), 1)
    assert deltas[0, 5, 5] == pytest.approx(0.1, abs=1e-6)
    _, deltas = voronoi_targets(coords[::-1], (11, 11), 1)
    assert deltas[0, 5, 5] == pytest.approx(0.1, abs=1e-6)


def test_dilation_and_outside_spots():
    lab = spot_labels([[2, 2], [50, 50]], (10, 10), dilation=1)
    assert lab.sum() == 9 and lab[1:4, 1:4].all()
    assert spot_labels([[2, 2]], (10, 10), dilation=0).sum() == 1
    lab, deltas = voronoi_targets(np.zeros((0, 2)), (8, 9))
    assert not lab.any() and not deltas.any() and deltas.shape == (2, 8, 9)


def test_bad_coordinates_are_explained():
    with pytest.raises(SpotDetectError, match="shape"):
        voronoi_targets(np.zeros((3, 3)), (8, 8))
    with pytest.raises(SpotDetectError, match="NaN"):
        voronoi_targets([[np.nan, 1.0]], (8, 8))


def test_deepspot_target_is_the_image_with_a_stamp():
    target = np.load(shared("fixtures", "deepspot", "repo_sim1_target.npy")).astype(np.float64)
    raw = np.load(shared("fixtures", "deepspot", "repo_sim1_raw.npy")).astype(np.float64)
    # the authors' isolated stamps (3x3 windows equal to the stamp, centred on a changed pixel)
    centres = [(r, c) for r, c in np.argwhere((target == 255) & (target != raw))
               if 1 <= r < 255 and 1 <= c < 255 and np.array_equal(target[r - 1:r + 2, c - 1:c + 2], DEEPSPOT_STAMP)]
    assert len(centres) > 20
    ours = deepspot_target(raw, centres) * 255  # raw spans 0..255, so no rescaling happens
    for r, c in centres:
        np.testing.assert_allclose(ours[r - 1:r + 2, c - 1:c + 2], DEEPSPOT_STAMP, atol=1e-3)
    far = np.ones_like(raw, dtype=bool)
    for r, c in np.argwhere(target != raw):
        far[max(0, r - 2):r + 3, max(0, c - 2):c + 3] = False
    np.testing.assert_allclose(ours[far], raw[far], atol=1e-3)
    rng = np.random.default_rng(1)
    img = rng.uniform(10, 50, (20, 24))
    t = deepspot_target(img, [[5.2, 6.7], [0.1, 23.0]])
    assert t.max() == pytest.approx(1.0)
    np.testing.assert_allclose(t[4:7, 6:9] * 255, DEEPSPOT_STAMP, atol=1e-4)
    np.testing.assert_allclose(t[0:2, 22:24] * 255, DEEPSPOT_STAMP[1:, :2], atol=1e-4)  # clipped at the edge
