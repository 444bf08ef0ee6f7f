"""z-stacks after a detection: later images keep to their plane; D deletes a ring seen on a neighbouring plane."""

from __future__ import annotations

import numpy as np
from napari.utils.key_bindings import coerce_keybinding

from napari_spotdetect import layer_keys as K


def test_stack_view_after_detection(detect_widget, tiny_model, run_and_wait, tmp_path):
    viewer, detect = detect_widget
    viewer.open_sample("napari-spotdetect", "smfish_stack")
    crop = np.asarray(viewer.layers["smFISH stack (synthetic)"].data[:5, :96, :96], dtype=np.float32)
    viewer.layers.clear()
    stack = viewer.add_image(crop, name="stack")
    detect.set_model(tiny_model)
    assert detect._choices.axes.value == "zyx"
    run_and_wait(detect)
    [spots] = [lay for lay in viewer.layers if K.is_detection(lay)]
    assert len(spots.data) and viewer.dims.thickness[0] > 1  # rings show on the neighbouring planes

    later = viewer.add_image(crop, name="added later")
    assert str(later.projection_mode) == "none" and str(stack.projection_mode) == "none"  # never a slab mean

    _dock, correct = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Correct spots")
    correct.set_folder(tmp_path)
    correct.set_layer(spots)
    z, y, x = spots.data[0]
    viewer.dims.set_point(0, z + 1 if z + 1 <= 4 else z - 1)  # the spot's ring shows, smaller, on this plane
    viewer.cursor.position = (viewer.dims.point[0], y, x)
    n = len(spots.data)
    spots.keymap[coerce_keybinding("d")](spots)  # D
    assert len(spots.data) == n - 1
    assert not np.any(np.all(np.isclose(spots.data, [z, y, x]), axis=1))
