"""Closing the tabbed dock with its x ends what its panels were doing, as closing a single panel does."""

from __future__ import annotations

import numpy as np
import tifffile
from napari.utils.key_bindings import coerce_keybinding
from qtpy.QtCore import QThreadPool

from napari_spotdetect import layer_keys as K
from napari_spotdetect.core.training.synthetic import synthetic_image
from napari_spotdetect.widgets import shortcuts as S
from napari_spotdetect.widgets.folder_widget import DONE_KEY

# waits end as soon as their condition holds; a loaded 2-core machine may need minutes, never a failure
WAIT_MS = 600_000


def _folder(tmp_path, n=2, size=256):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(n):
        img, _ = synthetic_image((size, size), n_spots=15, seed=40 + i)
        tifffile.imwrite(folder / f"cell{i}.tif", img.astype(np.float32))
    return folder


def _tabs(viewer, model):
    _dock, panels = viewer.window.add_plugin_dock_widget("napari-spotdetect", "All panels (tabs)")
    panels.detect.set_model(model)
    return panels


def test_closing_the_tabbed_dock_mid_detection_stops_it_and_a_new_dock_takes_over(make_napari_viewer, tiny_model,
                                                                                 tmp_path, qtbot):
    folder = _folder(tmp_path)
    viewer = make_napari_viewer()
    panels = _tabs(viewer, tiny_model)
    tiny_model.delay = 0.3
    panels.folder.set_folder(folder)  # opens cell0 and starts detecting it
    qtbot.waitUntil(lambda: tiny_model.calls >= 1, timeout=WAIT_MS)
    assert panels.detect.running
    viewer.window.remove_dock_widget(panels)  # what the dock's x does
    assert not panels.detect.running
    QThreadPool.globalInstance().waitForDone(WAIT_MS)
    qtbot.wait(50)  # any queued signal would be delivered now: none may reach the closed panels
    assert [lay.name for lay in viewer.layers] == ["cell0"]  # the detection added nothing
    # Ctrl+Enter no longer reaches the closed folder panel: the image is not marked done, nothing opens
    assert coerce_keybinding(DONE_KEY) not in viewer.keymap
    press = type(viewer).class_keymap[coerce_keybinding(S.key_of("napari-spotdetect:done_and_next_image"))]
    press(viewer)
    assert [lay.name for lay in viewer.layers] == ["cell0"]
    assert not (folder / "spotdetect_folder.json").exists()

    # the dock again, on the same folder: it takes the open image over (no second copy) and its truth saves
    tiny_model.delay = 0.0
    panels2 = _tabs(viewer, tiny_model)
    panels2.folder.set_folder(folder)
    qtbot.waitUntil(lambda: panels2.folder.truth_layer() is not None, timeout=WAIT_MS)
    assert [lay.name for lay in viewer.layers if isinstance(lay, type(viewer.layers["cell0"]))] == ["cell0"]
    truth = panels2.folder.truth_layer()
    assert (folder / "cell0.csv").exists() and truth.metadata[K.TRUTH]["image"] == "cell0"
    press(viewer)  # Ctrl+Enter works for the new dock: cell0 done, cell1 opens
    assert "cell1" in viewer.layers and "cell0" not in viewer.layers


def test_closing_the_tabbed_dock_lets_go_of_the_corrected_layer(make_napari_viewer, tiny_model, tmp_path, qtbot):
    viewer = make_napari_viewer()
    panels = _tabs(viewer, tiny_model)
    img = viewer.add_image(np.zeros((40, 40), np.float32), name="img")
    pts = viewer.add_points(np.array([[5.0, 5.0]]), name="spots")
    panels.correct.set_layer(pts)
    panels.correct.set_image(img)
    assert coerce_keybinding("a") in pts.keymap
    viewer.window.remove_dock_widget(panels)
    assert coerce_keybinding("a") not in pts.keymap  # napari's own A (select all points) is back
    viewer.cursor.position = (20.0, 30.0)
    press = type(viewer).class_keymap[coerce_keybinding(S.key_of("napari-spotdetect:add_spot_at_cursor"))]
    press(viewer)
    assert len(pts.data) == 1  # the closed panel adds nothing


def test_a_closed_panel_no_longer_follows_the_layer_list(make_napari_viewer):
    viewer = make_napari_viewer()
    docks = [viewer.window.add_plugin_dock_widget("napari-spotdetect", name)[1]
             for name in ("Detect spots", "All panels (tabs)")]

    def followers():
        return [cb for cb in viewer.layers.events.inserted.callbacks
                if any(getattr(cb, "__self__", None) is w or (isinstance(cb, tuple) and cb[0]() is w) for w in docks)]

    assert len(followers()) == 2  # napari connects each docked widget's reset_choices
    for w in docks:
        viewer.window.remove_dock_widget(w if not hasattr(w, "native") else w.native)
    assert followers() == []  # at exit napari would otherwise call them on deleted Qt objects
