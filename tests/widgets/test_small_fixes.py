"""Small things a user tripped over (issue 23 item 11), each driven through the panel as they met it."""

from __future__ import annotations

import numpy as np
from napari.utils.key_bindings import coerce_keybinding
from qtpy.QtWidgets import QScrollArea

from napari_spotdetect import layer_keys as K
from napari_spotdetect.widgets import shortcuts as S

LAPTOP = (1366, 768)


def _dock(viewer, name):
    return viewer.window.add_plugin_dock_widget("napari-spotdetect", name)[1]


def _viewer_key(viewer, action):
    type(viewer).class_keymap[coerce_keybinding(S.key_of(action))](viewer)


def test_contrast_floor_label_names_the_floor(detect_widget, detected_2d):
    _viewer, detect = detect_widget
    detect._floor.value = 0.3  # the live count, before the layer follows
    assert "contrast floor 0.30" in detect._count.value and "at 0." not in detect._count.value.split("floor")[0]


def test_ctrl_z_with_another_layer_selected_leaves_the_ground_truth(detected_2d, tmp_path):
    viewer, image, spots, _true = detected_2d
    correct = _dock(viewer, "Correct spots")
    correct.set_layer(spots)
    correct.set_folder(tmp_path)
    truth = correct.start_ground_truth()
    n = len(truth.data)
    truth.selected_data = {0}
    truth.remove_selected()
    viewer.layers.selection.active = image  # the user works on another layer now
    _viewer_key(viewer, "napari-spotdetect:undo_correction")
    assert len(truth.data) == n - 1 and "only when it is selected" in correct.status.value
    viewer.layers.selection.active = truth
    _viewer_key(viewer, "napari-spotdetect:undo_correction")
    assert len(truth.data) == n


def test_correct_panel_docked_before_detecting_corrects_the_detections(detect_widget, tiny_model, run_and_wait,
                                                                       tmp_path):
    viewer, detect = detect_widget
    correct = _dock(viewer, "Correct spots")
    viewer.open_sample("napari-spotdetect", "smfish_2d")  # brings the "true spots" layer
    assert correct.layer.name == "true spots"
    detect.set_model(tiny_model)
    run_and_wait(detect)
    [spots] = [lay for lay in viewer.layers if K.is_detection(lay)]
    assert correct.layer is spots or correct.layer.name == spots.name
    correct.set_folder(tmp_path)
    correct._copy.native.click()  # "Start ground truth from these spots"
    [truth] = [lay for lay in viewer.layers if K.is_truth(lay)]
    np.testing.assert_allclose(truth.data, spots.data)


def test_an_edited_detection_kept_beside_a_new_run_says_so_in_its_name(detected_2d, detect_widget, run_and_wait):
    viewer, _image, spots, _true = detected_2d
    _viewer, detect = detect_widget
    name = spots.name
    correct = _dock(viewer, "Correct spots")
    correct.set_layer(spots)
    spots.selected_data = {0}
    spots.remove_selected()  # the user edits the detections themselves
    run_and_wait(detect)
    names = [lay.name for lay in viewer.layers if K.PROVENANCE in lay.metadata]
    assert f"{name} (edited)" in names and name in names and not any(n.endswith("]") for n in names)


def test_buttons_say_what_they_do(make_napari_viewer):
    viewer = make_napari_viewer()
    _dock, panels = viewer.window.add_plugin_dock_widget("napari-spotdetect", "All panels (tabs)")
    for button in (panels.qc._export, panels.folder._prev, panels.folder._open):
        assert button.tooltip, button.text


def test_correct_tab_shows_the_review_list_at_768_px(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(*LAPTOP)
    _dock, panels = viewer.window.add_plugin_dock_widget("napari-spotdetect", "All panels (tabs)")
    panels.show_tab("Correct")
    qtbot.wait(100)
    table = panels.correct.review_table
    scroll = panels.correct.native.findChild(QScrollArea)
    top = table.mapTo(scroll.widget(), table.rect().topLeft()).y()
    visible = scroll.viewport().height() - top - table.horizontalHeader().height()
    rows = visible // table.verticalHeader().defaultSectionSize()
    assert rows >= 5, (rows, scroll.viewport().height(), top)


def test_status_is_never_cut_off_in_a_narrow_detect_dock(make_napari_viewer, tiny_model, run_and_wait, qtbot):
    from qtpy.QtCore import Qt

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(*LAPTOP)
    viewer.add_image(np.zeros((64, 64), np.float32), name="an image with a long name, as microscopes write them")
    dock, detect = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Detect spots")
    viewer.window._qt_window.resizeDocks([dock], [260], Qt.Orientation.Horizontal)
    detect.set_model(tiny_model)
    run_and_wait(detect)
    qtbot.wait(100)
    for label in (detect._status.native, detect._count.native):
        assert label.height() >= label.heightForWidth(label.width()), (label.text(), label.width(), label.height())
