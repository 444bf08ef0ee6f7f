"""Threshold moves on a result too big to draw whole: the layer still holds exactly the spots above the
threshold (with their features, colours and measurements), the canvas draws a thinned set of them when zoomed
out and all of them when zoomed in; and the quick swap leaves a layer exactly as napari's own path does."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from napari_spotdetect import layer_keys as K
from napari_spotdetect.widgets import layers as L
from napari_spotdetect.widgets.light_drawing import DRAW_BUDGET, spot_keys, thinned
from napari_spotdetect.widgets.points_swap import swap_points

WAIT_MS = 600_000


def _many_spots_result(widget, viewer, n):
    """A finished detection of about ``n`` spots at 0.5 (twice as many candidates), handed to the panel as its
    worker hands a result."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from bench_points import make_detections

    image = viewer.add_image(np.zeros((4096, 4096), dtype=np.uint8), name="big image")
    dets = make_detections(2 * n, 4096)
    dets.provenance.update(model="bench", device="cpu", tiling={}, threshold=0.5)
    model = SimpleNamespace(info=SimpleNamespace(name="bench"), threshold_range=(0.05, 1.0))
    widget._on_result(SimpleNamespace(detections=dets, model=model), {"layer": image, "axes": "yx"})
    return dets, widget._rethreshold.target


def _drawn(viewer, layer) -> np.ndarray:
    """(y, x) of the markers the canvas holds for ``layer`` (vispy keeps x, y)."""
    visual = viewer.window._qt_viewer.canvas.layer_to_visual[layer]
    return np.asarray(visual.node.points_markers._data["a_position"][:, :2])[:, ::-1]


def _rows_of(layer, pts) -> np.ndarray:
    """The layer's row at each point (the canvas keeps float32: to 0.01 px), or -1."""
    from scipy.spatial import cKDTree

    dist, row = cKDTree(np.asarray(layer.data)).query(pts)
    return np.where(dist < 0.01, row, -1)


@pytest.mark.slow
def test_threshold_moves_on_many_spots_keep_exactly_the_spots_above(detect_widget, qtbot):
    viewer, widget = detect_widget
    dets, layer = _many_spots_result(widget, viewer, 3 * DRAW_BUDGET)
    # a measurement the user made (as the Measure panel adds a column): it must follow its spots
    layer.features["fit_ok"] = np.arange(len(layer.data)) % 2 == 0
    for t in (0.7, 0.3, 0.55, 0.5):  # fewer, more, fewer again, back
        measured = dict(zip(map(tuple, np.round(layer.data, 3)), layer.features["fit_ok"]))
        widget._threshold.value = t  # as a user drags the slider; the layer follows when it pauses
        qtbot.waitUntil(lambda t=t: layer.metadata[K.PROVENANCE]["threshold"] == t, timeout=WAIT_MS)
        want, feats = L.points_from_spots(dets.rethreshold(t), "yx")
        assert np.array_equal(layer.data, want)  # exactly the spots above the threshold, in order
        got = layer.features.reset_index(drop=True)
        pd.testing.assert_frame_equal(got.drop(columns="fit_ok"), feats)
        old = [measured.get(k) for k in map(tuple, np.round(want, 3))]
        back = np.array([o is None for o in old])
        assert np.array_equal(got["fit_ok"].to_numpy()[~back], np.array([o for o in old if o is not None], bool))
        assert back.any() == (t in (0.3, 0.5)) and not got["fit_ok"].to_numpy()[back].any()  # back: unmeasured
        assert len(layer.size) == len(layer.symbol) == len(layer.border_width) == len(layer.border_color) \
            == len(layer.face_color) == len(layer.shown) == len(want)
        fresh = layer.__class__(want, **L.points_layer_kwargs(
            "fresh", feats, score_range=layer.border_contrast_limits, scale=(1, 1), translate=(0, 0),
            stack=False, metadata={}))
        assert np.allclose(layer.border_color, fresh.border_color)  # coloured by their own scores
        assert widget._count.value.startswith(f"{len(want):,} in")  # the true count, not the drawn one
        # every marker drawn is one of the layer's spots, where it is; zoomed out, a thinned set of them
        qtbot.waitUntil(lambda: (_rows_of(layer, _drawn(viewer, layer)) >= 0).all(), timeout=WAIT_MS)
        assert 0.7 * DRAW_BUDGET < len(_drawn(viewer, layer)) < 1.3 * DRAW_BUDGET < len(want)

    # zoomed in on a corner: every spot in view is drawn
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.center = (0, 200, 200)
    camera.zoom = 2.0
    canvas = viewer.window._qt_viewer.canvas
    corner = (layer.data[:, 0] < 400) & (layer.data[:, 1] < 400)
    qtbot.waitUntil(lambda: set(np.flatnonzero(corner)) <= set(_rows_of(layer, _drawn(viewer, layer))),
                    timeout=WAIT_MS)
    assert canvas is viewer.window._qt_viewer.canvas
    assert len(_drawn(viewer, layer)) < len(layer.data)


def test_thinned_view_is_stable_and_fills_the_view():
    rng = np.random.default_rng(1)
    pos = rng.uniform(0, 1000, (50_000, 2))
    keys = spot_keys(pos)
    assert keys.min() >= 0 and keys.max() < 1 and abs(keys.mean() - 0.5) < 0.01
    whole = thinned(keys, pos, (np.zeros(2), np.full(2, 1000.0)), 5000)
    assert 4500 < len(whole) < 5500
    # a spot kept at a low threshold is kept at a higher one (same keys): the picture does not flicker
    high = np.flatnonzero(rng.uniform(size=len(pos)) < 0.5)
    kept_high = set(high[thinned(keys[high], pos[high], (np.zeros(2), np.full(2, 1000.0)), 5000)])
    assert set(whole) & set(high) <= kept_high
    # a small view holds fewer spots than the budget: all of them are drawn, and those near it
    small = thinned(keys, pos, (np.array([0.0, 0.0]), np.array([100.0, 100.0])), 5000)
    inside = np.flatnonzero(np.all(pos <= 100, axis=1))
    assert set(inside) <= set(small) and np.all(pos[small] <= 150)
    assert thinned(keys[:100], pos[:100], None, 5000) is None  # under the budget: napari draws them all


def _layer(coords, feats, **style):
    from napari.layers import Points

    kw = L.points_layer_kwargs("spots", feats, score_range=(0.05, 1.0), scale=(1, 1), translate=(0, 0),
                               stack=False, metadata={})
    return Points(coords, **{**kw, **style})


def _spots(n, seed):
    rng = np.random.default_rng(seed)
    coords = rng.uniform(0, 500, (n, 2))
    feats = pd.DataFrame({"score": rng.uniform(0.05, 1.0, n), "intensity": rng.uniform(1, 9, n),
                          "source": ["predicted"] * n, "model": ["m"] * n})
    return coords, feats


@pytest.mark.parametrize("n_new", [0, 40, 100, 160])
@pytest.mark.parametrize("n_old", [0, 100])
def test_swap_leaves_the_layer_as_napari_would(n_old, n_new):
    coords, feats = _spots(n_old, 0)
    new_coords, new_feats = _spots(n_new, 1)
    theirs, ours = _layer(coords, feats), _layer(coords, feats)
    for lay in (theirs, ours):  # a user's own style on some spots, and a style for new ones
        if n_old:
            lay.size = np.where(np.arange(n_old) % 3 == 0, 11.0, 7.0)
            lay.symbol = np.where(np.arange(n_old) % 2 == 0, "diamond", "disc")
        lay.current_size = 5
    events = {"theirs": [], "ours": []}
    for key, lay in (("theirs", theirs), ("ours", ours)):
        heard = events[key]
        lay.events.data.connect(lambda e, heard=heard: heard.append((str(e.action), len(e.data_indices))))
        lay.events.features.connect(lambda e, heard=heard, lay=lay: heard.append(("features", len(lay.features))))
    theirs.data = new_coords
    theirs.features = new_feats
    assert swap_points(ours, new_coords, new_feats)
    assert np.array_equal(ours.data, theirs.data)
    pd.testing.assert_frame_equal(ours.features, theirs.features)
    for name in ("size", "border_width", "shown", "border_color", "face_color"):
        assert np.array_equal(getattr(ours, name), getattr(theirs, name)), name
    assert [str(s) for s in ours.symbol] == [str(s) for s in theirs.symbol]
    assert ours._view_indices.tolist() == list(range(n_new))
    # the same data events, and the features last, once the spots and their features agree
    theirs_data = [e for e in events["theirs"] if e[0] != "features"]
    assert [e for e in events["ours"] if e[0] != "features"] == theirs_data
    assert events["ours"][-1] == ("features", n_new)


def test_swap_declines_a_layer_it_does_not_know():
    coords, feats = _spots(20, 0)
    lay = _layer(coords, feats, text="score")  # text labels are laid out by napari
    new_coords, new_feats = _spots(30, 1)
    assert not swap_points(lay, new_coords, new_feats) and len(lay.data) == 20
    lay = _layer(coords, feats)
    assert not swap_points(lay, new_coords, new_feats.drop(columns="score"))  # the colouring feature is gone
    L.replace_points(lay, new_coords, new_feats)  # the caller's fallback: napari's own path
    assert np.array_equal(lay.data, new_coords)
