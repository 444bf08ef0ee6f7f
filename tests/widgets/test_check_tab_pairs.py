"""The Check tab, open before any layer exists, compares the detections with their ground truth in one click."""

from __future__ import annotations

import numpy as np

from napari_spotdetect import layer_keys as K
from napari_spotdetect.core.training.synthetic import synthetic_image


def test_check_tab_opened_first_compares_in_one_click(make_napari_viewer, tiny_model, run_and_wait, tmp_path):
    viewer = make_napari_viewer()
    _dock, panels = viewer.window.add_plugin_dock_widget("napari-spotdetect", "All panels (tabs)")
    img, _ = synthetic_image((128, 128), n_spots=20, seed=3)
    viewer.add_image(img.astype(np.float32), name="cells")
    panels.detect.set_model(tiny_model)
    run_and_wait(panels.detect)
    [spots] = [lay for lay in viewer.layers if K.is_detection(lay)]
    panels.correct.set_folder(tmp_path)
    panels.correct._copy.native.click()  # "Start ground truth from these spots"
    [truth] = [lay for lay in viewer.layers if K.is_truth(lay)]
    truth.selected_data = {0}
    truth.remove_selected()  # one false spot deleted
    panels.show_tab("Check")
    assert panels.qc.chosen == (spots, truth)
    panels.qc._run.native.click()  # Compare
    assert panels.qc.rows and panels.qc.rows[0]["fp"] == 1 and panels.qc.rows[0]["fn"] == 0
    assert "F1" in panels.qc.summary


def test_check_panel_never_offers_one_layer_as_both(make_napari_viewer):
    viewer = make_napari_viewer()
    _dock, qc = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Check against ground truth")
    viewer.add_points(np.array([[5.0, 5.0], [9.0, 9.0]]), name="mine")
    viewer.add_points(np.array([[5.0, 5.0]]), name="theirs")
    pred, truth = qc.chosen
    assert pred is not None and truth is not None and pred is not truth
    qc._run.native.click()
    assert qc.rows and qc.rows[0]["n_pred"] + qc.rows[0]["n_true"] == 3


def test_the_filter_tab_does_not_turn_the_samples_true_spots_into_a_detection(make_napari_viewer, tiny_model,
                                                                            run_and_wait, tmp_path):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-spotdetect", "smfish_2d")
    _dock, panels = viewer.window.add_plugin_dock_widget("napari-spotdetect", "All panels (tabs)")
    assert not K.is_detection(viewer.layers["true spots"])  # the Filter tab looked at it, nothing more
    panels.detect.set_model(tiny_model)
    run_and_wait(panels.detect)
    [spots] = [lay for lay in viewer.layers if K.is_detection(lay)]
    panels.correct.set_layer(spots)
    panels.correct.set_folder(tmp_path)
    truth = panels.correct.start_ground_truth()
    np.testing.assert_allclose(truth.data, spots.data)  # the detections' copy, not the sample's truth
