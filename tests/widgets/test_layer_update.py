"""Moving the threshold slider updates the spots layer in one batch (drawn once), and the layer then holds
and draws exactly what a layer built afresh at that threshold would: same spots, features and colours, and
the canvas draws every one of them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

WAIT_MS = 600_000


def _drawn(viewer, layer) -> np.ndarray:
    """(y, x) of the markers the canvas holds for ``layer`` (vispy keeps them as x, y)."""
    visual = viewer.window._qt_viewer.canvas.layer_to_visual[layer]
    pos = visual.node.points_markers._data["a_position"][:, :2]
    return np.asarray(pos)[:, ::-1]


@pytest.mark.slow
def test_threshold_move_updates_the_layer_as_a_rebuild_would(detect_widget, run_and_wait, qtbot):
    from napari.layers import Points

    from napari_spotdetect import layer_keys as K
    from napari_spotdetect.widgets import layers as L

    viewer, widget = detect_widget
    viewer.open_sample("napari-spotdetect", "smfish_2d")
    widget._choices.model_kind.value = "default"
    widget._choices.device.value = "cpu"
    run_and_wait(widget, timeout=WAIT_MS)
    layer = next(lay for lay in viewer.layers if "spotdetect" in lay.metadata)
    dets = layer.metadata[K.DETECTIONS]
    redraws = []
    visual = viewer.window._qt_viewer.canvas.layer_to_visual[layer]
    for emitter in L._drawing_events(layer):  # each one makes the canvas rebuild all its markers
        emitter.connect(lambda *_: redraws.append(1))
    data_events = []
    layer.events.data.connect(lambda *_: data_events.append(1))  # what other panels listen to still fires
    for t in (0.9, 0.2, 0.6):
        redraws.clear()
        widget._threshold.value = t  # as a user drags the slider; the layer follows when it pauses
        qtbot.waitUntil(lambda t=t: len(layer.data) == dets.count(t), timeout=WAIT_MS)
        qtbot.wait(50)
        assert len(redraws) == 1, f"drawn {len(redraws)} times for one move"
        coords, features = L.points_from_spots(dets.rethreshold(t), "yx")
        fresh = Points(coords, **L.points_layer_kwargs("fresh", features, score_range=layer.border_contrast_limits,
                                                       scale=(1, 1), translate=(0, 0), stack=False, metadata={}))
        assert np.array_equal(layer.data, fresh.data)
        pd.testing.assert_frame_equal(layer.features.reset_index(drop=True), fresh.features.reset_index(drop=True))
        assert np.allclose(layer.border_color, fresh.border_color)
        drawn = _drawn(viewer, layer)
        assert len(drawn) == len(fresh.data) > 0
        assert np.allclose(np.sort(drawn, axis=0), np.sort(fresh.data, axis=0), atol=1e-4)
    assert data_events and visual is viewer.window._qt_viewer.canvas.layer_to_visual[layer]  # same layer, updated

