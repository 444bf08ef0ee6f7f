"""Edges (core/detection/edges.py): points along the rim of a bright object are no spots; spots beside it, on
it and in a crowd stay."""

import numpy as np
from scipy import ndimage

from napari_spotdetect.core.detection.detect import detect
from napari_spotdetect.core.detection.edges import capped_scores, on_edge, ring_margin
from napari_spotdetect.core.detection.fft_filters import SMOOTH_SIGMA
from tests.conftest import gaussian_spots


def test_a_rim_point_has_no_margin_and_a_spot_alone_or_in_a_crowd_has():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :96]
    disc = ndimage.gaussian_filter(2000.0 * (np.hypot(yy - 48, xx - 48) < 30), 1.0)
    crowd = [(15, 80), (15, 83.5), (18.5, 80)]  # a spot with two neighbours 3.5 px away
    img = 300 + disc + gaussian_spots((96, 96), [(85, 85), *crowd], 800.0) + rng.normal(0, 5, (96, 96))
    smoothed = ndimage.gaussian_filter(img, SMOOTH_SIGMA)  # as the second stage's band maps hold it
    margin = ring_margin(smoothed, np.array([[48, 19], [48, 77], [20, 48], [85, 85], [15, 80]]), 5.0)
    assert (margin[:3] < 1).all()  # just inside the rim, on three sides
    assert (margin[3:] > 20).all()  # alone, and in the crowd
    assert ring_margin(smoothed, np.zeros((0, 2)), 5.0).shape == (0,)
    # a clipped spot is flat on top, never one-sided
    edge = on_edge(np.array([0.2, 0.2, 3.0]), np.array([0.0, 0.5, 0.0]))
    assert edge.tolist() == [True, False, False]
    # a one-sided candidate keeps the network's score, but stays a candidate
    capped = capped_scores(np.array([0.9, 0.9, 0.9]), edge, np.array([0.0, 0.1, 0.1]), 0.002)
    assert capped.tolist() == [0.002, 0.9, 0.9]


def test_the_bundled_model_calls_no_spots_along_a_bright_objects_rim(default_model):
    """A bright body with a sharp rim (blur 1.5 px), the brightest thing in the field, and dim spots around it."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:256, :256]
    body = ndimage.gaussian_filter(500 + 2500.0 * (np.hypot(yy - 128, xx - 128) < 80), 1.5)
    spots = [(128 + 105 * np.sin(a), 128 + 105 * np.cos(a)) for a in np.linspace(0.2, 2 * np.pi, 8, endpoint=False)]
    img = rng.poisson(body + gaussian_spots((256, 256), spots, 600.0)).astype(np.uint16)
    yx = detect(img, default_model, keep_maps=False).spots[["y", "x"]].to_numpy()
    rim = np.abs(np.hypot(yx[:, 0] - 128, yx[:, 1] - 128) - 80) < 5
    assert rim.sum() == 0, f"{rim.sum()} spots on the rim"
    truth = np.array(spots)
    assert (np.hypot(yx[:, None, 0] - truth[:, 0], yx[:, None, 1] - truth[:, 1]).min(0) < 1.5).all()
