"""Tiled inference: every spot once, whatever the tiling."""

import numpy as np
import pytest

from napari_spotdetect import detect
from napari_spotdetect.core.detection.tiling import plan_axis, plan_tiles
from napari_spotdetect.core.groundtruth.metrics import match_spots
from napari_spotdetect.core.training.synthetic import synthetic_image


@pytest.mark.parametrize("length,starts,borders", [
    (256, (0,), (0, 256)),
    (300, (0, 230), (0, 243, 300)),
    (1024, (0, 230, 460, 690, 920), (0, 243, 473, 703, 933, 1024)),
])
def test_axis_plan_follows_piscis(length, starts, borders):
    p = plan_axis(length, 256, 0.1)
    assert p.starts == starts and p.borders == borders and p.stops[-1] == length


@pytest.mark.parametrize("shape,tile", [((700, 530), (256, 256)), ((100, 90), (256, 256)), ((513, 257), (64, 128))])
def test_ownership_partitions_the_image(shape, tile):
    plan = plan_tiles(shape, tile)
    rng = np.random.default_rng(1)
    pts = rng.uniform(-0.49, np.array(shape) - 0.51, size=(5000, 2))
    owners = np.stack([t.owns(pts) for t in plan.tiles]).sum(0)
    assert (owners == 1).all()
    for t in plan.tiles:  # a tile owns only what it sees
        r0, r1, c0, c1 = t.own
        assert t.rows.start <= r0 < r1 <= t.rows.stop and t.cols.start <= c0 < c1 <= t.cols.stop


@pytest.fixture(scope="module")
def big_image():
    return synthetic_image((560, 600), n_spots=260, seed=7, amplitude=(500, 1000))


@pytest.fixture(scope="module")
def reference(piscis_model, big_image):
    return detect(big_image[0], piscis_model, batch_size=1).spots


def _no_doubles(spots):
    from scipy.spatial import cKDTree

    pairs = cKDTree(spots[["y", "x"]].to_numpy()).query_pairs(1.5)
    assert not pairs, f"{len(pairs)} spots reported twice"


@pytest.mark.slow
def test_batch_size_never_changes_spots(piscis_model, big_image, reference):
    other = detect(big_image[0], piscis_model, batch_size=3).spots
    assert len(other) == len(reference)
    np.testing.assert_allclose(np.sort(other[["y", "x"]].to_numpy(), 0), np.sort(reference[["y", "x"]].to_numpy(), 0),
                               atol=1e-3)


def test_reference_finds_the_spots_once(big_image, reference):
    _no_doubles(reference)
    assert match_spots(reference[["y", "x"]], big_image[1], 1.0).f1 > 0.9


@pytest.mark.parametrize("kwargs", [{"tile_size": (192, 192)}, {"overlap": 0.2},
                                    {"tile_size": (256, 128), "overlap": 0.15}])
@pytest.mark.slow
def test_other_tilings_agree(piscis_model, big_image, reference, kwargs):
    spots = detect(big_image[0], piscis_model, **kwargs).spots
    _no_doubles(spots)
    assert match_spots(spots[["y", "x"]], reference[["y", "x"]], 1.0).f1 >= 0.99


@pytest.mark.slow
def test_image_offset_agrees(piscis_model, big_image, reference):
    dy, dx = 37, 53
    spots = detect(big_image[0][dy:, dx:], piscis_model).spots
    got = spots[["y", "x"]].to_numpy() + (dy, dx)
    ref = reference[["y", "x"]].to_numpy()
    inner = lambda a: a[(a[:, 0] > dy + 4) & (a[:, 1] > dx + 4)]  # noqa: E731 (spots cut by the crop excluded)
    _no_doubles(spots)
    assert match_spots(inner(got), inner(ref), 1.0).f1 >= 0.99


@pytest.mark.parametrize("length,tile", [(2048, 1024), (1500, 1024), (1030, 1024), (700, 256), (2000, 512)])
def test_end_aligned_tiles_stay_inside_and_partition(length, tile):
    p = plan_axis(length, tile, 0.25, end_align=8)
    assert p.stops[-1] == length and all(e - s == tile for s, e in zip(p.starts[:-1], p.stops[:-1]))
    assert tile - 8 < p.stops[-1] - p.starts[-1] <= tile
    assert all(s % 8 == 0 for s in p.starts) and list(p.starts) == sorted(set(p.starts))
    assert p.borders[0] == 0 and p.borders[-1] == length
    for k in range(len(p.starts)):  # each tile owns a part of what it covers, with a margin inside
        assert p.starts[k] <= p.borders[k] < p.borders[k + 1] <= p.stops[k]


def test_fit_tiles_to_image_shrinks_tiles(tiny_piscis, monkeypatch):
    from napari_spotdetect import detect

    monkeypatch.setattr(type(tiny_piscis), "fit_tiles_to_image", True)
    img = np.random.default_rng(0).normal(size=(100, 90)).astype(np.float32)
    prov = detect(img, tiny_piscis, tile_size=256).provenance["tiling"]
    assert prov["tile"] == [104, 96] and prov["n_tiles"] == 1


def test_fast_mode_agrees_with_exact_mode(piscis_model, big_image, reference):
    """Fast mode: fewer, larger tiles and bfloat16 where the CPU has it; the spots stay piscis's (F1 >= 0.99)."""
    det = detect(big_image[0], piscis_model, speed="fast")
    spots = det.spots
    _no_doubles(spots)
    assert det.provenance["speed"] == "fast" and det.provenance["tiling"]["n_tiles"] < 9
    assert match_spots(spots[["y", "x"]], reference[["y", "x"]], 1.0).f1 >= 0.99
