"""PSF echoes (core/detection/echoes.py): a dim call that every bright spot carries at one offset is dropped;
dim neighbours at random offsets, and bright pairs, stay."""

import numpy as np

from napari_spotdetect.core.detection.detect import detect
from napari_spotdetect.core.detection.echoes import psf_echoes
from tests.conftest import separated_points


def test_dim_calls_at_one_repeated_offset_are_echoes_and_random_neighbours_are_not():
    rng = np.random.default_rng(0)
    bright = separated_points(25, (300, 300), 10, 14.0, seed=1)
    echo = bright[:20] + (2.2, 2.2) + rng.normal(0, 0.15, (20, 2))
    neighbour = bright[20:] + rng.uniform(-4, 4, (5, 2))  # dim spots beside five of them, anywhere
    twin = bright[:6] + (-2.2, 2.2)  # a second spot as bright as the first: no echo, however repeated
    coords = np.vstack([bright, echo, neighbour, twin])
    contrast = np.concatenate([rng.uniform(80, 120, 25), rng.uniform(15, 25, 20), rng.uniform(10, 30, 5),
                               rng.uniform(90, 110, 6)])
    flagged = psf_echoes(coords, contrast)
    assert flagged[25:45].all()
    assert not flagged[:25].any() and not flagged[45:].any()
    # only eligible points make pairs: without the bright ones there is nothing to echo
    assert not psf_echoes(coords, contrast, (np.arange(len(coords)) >= 25) & (np.arange(len(coords)) < 50)).any()


def test_doublets_at_one_distance_in_every_direction_are_no_echoes():
    """Sister loci: a dim partner 2.5 px from each of 200 spots, in any direction (a ring of offsets)."""
    rng = np.random.default_rng(4)
    first = separated_points(200, (600, 600), 10, 12.0, seed=6)
    angle = rng.uniform(0, 2 * np.pi, len(first))
    second = first + 2.5 * np.stack([np.sin(angle), np.cos(angle)], 1)
    coords = np.vstack([first, second])
    assert not psf_echoes(coords, np.concatenate([np.full(200, 100.0), np.full(200, 40.0)])).any()
    # the same partners all in one direction are a lobe
    lobe = first + (1.8, 1.7)
    assert psf_echoes(np.vstack([first, lobe]), np.concatenate([np.full(200, 100.0), np.full(200, 40.0)]))[200:].all()


def test_a_crowd_of_spots_at_random_places_has_no_echoes():
    rng = np.random.default_rng(3)
    coords = rng.uniform(0, 120, (900, 2))  # about 60 neighbours within 5 px per point: many pairs by chance
    assert not psf_echoes(coords, rng.lognormal(3, 1, len(coords))).any()
    assert not psf_echoes(coords[:3], np.ones(3)).any()


def test_the_bundled_model_calls_each_bead_of_an_aberrated_psf_once(default_model):
    rng = np.random.default_rng(0)
    beads = separated_points(30, (256, 256), 12, 20.0, seed=2)
    yy, xx = np.mgrid[:256, :256]
    img = np.full((256, 256), 500.0)
    for y, x in beads:  # a Gaussian PSF with a side lobe of a fifth of its peak, 3.1 px away on a diagonal
        img += 3000 * (np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.2 ** 2))
                       + 0.2 * np.exp(-((yy - y - 2.2) ** 2 + (xx - x - 2.2) ** 2) / (2 * 1.3 ** 2)))
    # and a real dim spot beside four beads, on the other side
    extra = beads[:4] + (-4.0, -3.0) * np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]])
    for y, x in extra:
        img += 900 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.2 ** 2))
    img = rng.poisson(img).astype(np.uint16)
    yx = detect(img, default_model, keep_maps=False).spots[["y", "x"]].to_numpy()
    truth = np.vstack([beads, extra])
    d = np.hypot(yx[:, None, 0] - truth[None, :, 0], yx[:, None, 1] - truth[None, :, 1])
    assert (d.min(1) < 1.5).all(), f"{(d.min(1) >= 1.5).sum()} calls on no bead or spot (echoes)"
    assert (d.min(0) < 1.5).sum() >= len(truth) - 1
