"""Issue 23 #20: the Detect panel's CPU-threads setting is used by the detection and comes back next session."""

from __future__ import annotations

import numpy as np

from napari_spotdetect import layer_keys as K
from napari_spotdetect.widgets.settings import save_settings


def test_threads_box_sets_the_detections_threads(detect_widget, tiny_model, run_and_wait):
    viewer, widget = detect_widget
    layer = viewer.add_image(np.random.default_rng(0).normal(100, 5, (64, 64)).astype(np.float32))
    widget.set_image(layer)
    widget.set_model(tiny_model)
    widget._choices.threads.native.setValue(1)  # the spin box, as a user sets it
    run_and_wait(widget)
    points = next(lay for lay in viewer.layers if K.PROVENANCE in lay.metadata)
    assert points.metadata[K.PROVENANCE]["threads"] == 1
    assert "idle" in widget._choices.threads.label and "idle" in widget._choices.threads.tooltip  # 0: the idle cores


def test_threads_setting_comes_back_in_the_next_session(make_napari_viewer):
    save_settings("detect", {"threads": 1, "model_kind": "default"})  # as the last session left it
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Detect spots")
    assert widget._choices.threads.value == 1
    assert widget._choices.to_remember()["threads"] == 1
