"""The widgets never lose or mislead a user's work: each test here reproduces a bug a user met (issue 14)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_spotdetect import layer_keys as K
from napari_spotdetect.core.io.spots_io import read_spots_csv, write_spots_csv
from napari_spotdetect.widgets.layers import same_layer

# waits end as soon as their condition holds; a loaded 2-core machine may need minutes, never a failure
WAIT_MS = 600_000


def _dock(viewer, name):
    return viewer.window.add_plugin_dock_widget("napari-spotdetect", name)[1]


def _detections(viewer):
    return [lay for lay in viewer.layers if K.is_detection(lay)]


@pytest.fixture
def detected(detect_widget, tiny_model, run_and_wait):
    """The 2-D sample detected with the tiny model: (viewer, detect widget, image, spots, true spots)."""
    viewer, widget = detect_widget
    viewer.open_sample("napari-spotdetect", "smfish_2d")
    widget.set_model(tiny_model)
    run_and_wait(widget)
    [spots] = _detections(viewer)
    return viewer, widget, viewer.layers["smFISH (synthetic)"], spots, viewer.layers["true spots"]


@pytest.mark.slow
def test_finetune_preselects_the_ground_truth_never_a_qc_layer(detected, tmp_path):
    viewer, _detect, _image, spots, true_spots = detected
    correct = _dock(viewer, "Correct spots")
    correct.set_layer(spots)
    correct.set_folder(tmp_path)
    truth = correct.start_ground_truth()
    truth.add(true_spots.data[:5])
    qc = _dock(viewer, "Check against ground truth")
    qc.set_layers(spots, truth)
    assert qc.compare()
    missed = [lay for lay in viewer.layers if K.is_qc(lay)]
    assert missed and viewer.layers[-1] is missed[0]  # the newest Points layer is the QC one

    tune = _dock(viewer, "Fine-tune on my spots")
    [row] = tune.examples.rows
    assert same_layer(row.points.value, truth)
    offered = [lay for lay in row.points.choices if lay is not None]
    assert offered and all(not K.is_qc(lay) for lay in offered)


@pytest.mark.slow
def test_ground_truth_never_overwrites_a_file_it_did_not_write(detected, tmp_path):
    viewer, _detect, _image, spots, _truth = detected
    csv = tmp_path / "smFISH_synthetic.csv"
    theirs = pd.DataFrame({"y": [1.0, 2.0], "x": [3.0, 4.0]})
    write_spots_csv(theirs, csv)  # an annotation from an earlier session (or a colleague)
    before = csv.read_bytes()
    correct = _dock(viewer, "Correct spots")
    correct.set_layer(spots)
    correct.set_folder(tmp_path)
    asked = []

    correct.confirm = lambda title, text: asked.append(text) or False  # the user says no
    assert correct.start_ground_truth() is None
    assert csv.read_bytes() == before and len(asked) == 1 and str(csv) in asked[0]
    assert not [lay for lay in viewer.layers if K.is_truth(lay)]
    assert "Kept smFISH_synthetic.csv" in correct.status.value

    correct.confirm = lambda title, text: True  # the user agrees: a backup is kept first
    truth = correct.start_ground_truth()
    assert truth is not None
    assert (tmp_path / "smFISH_synthetic.csv.bak").read_bytes() == before
    assert len(read_spots_csv(csv)) == len(spots.data)

    # a second truth layer of the same image would write the same file: refused, the first one's file stays
    mine = csv.read_bytes()
    correct.set_layer(spots)
    assert correct.start_ground_truth() is None
    assert csv.read_bytes() == mine and "already saves" in correct.status.value
    assert len([lay for lay in viewer.layers if K.is_truth(lay)]) == 1

    # edits of the first layer keep saving, without asking again
    correct.confirm = lambda title, text: pytest.fail("asked twice about a file this session wrote")
    correct.set_layer(truth)
    truth.selected_data = {0}
    truth.remove_selected()
    assert len(read_spots_csv(csv)) == len(spots.data) - 1


@pytest.mark.slow
def test_detect_again_keeps_an_edited_layer_and_names_results_by_model(detected, run_and_wait, tiny_model):
    viewer, widget, _image, spots, _truth = detected
    assert spots.name == f"spots: smFISH (synthetic) ({tiny_model.info.name})"
    old_dets, n_layers = spots.metadata[K.DETECTIONS], len(viewer.layers)
    run_and_wait(widget)  # unedited: the new result updates that layer (and the map) in place
    [again] = _detections(viewer)
    assert same_layer(again, spots) and len(viewer.layers) == n_layers
    assert again.metadata[K.DETECTIONS] is not old_dets
    assert len(again.data) == len(again.metadata[K.DETECTIONS].spots) == len(again.features)

    correct = _dock(viewer, "Correct spots")
    correct.set_layer(again)
    again.selected_data = {0}
    again.remove_selected()  # the user corrects the detection itself
    edited = np.array(again.data, copy=True)
    run_and_wait(widget)
    layers = _detections(viewer)
    assert len(layers) == 2 and any(same_layer(lay, again) for lay in layers)
    np.testing.assert_allclose(again.data, edited)  # the user's work is still there, unchanged


def test_threshold_on_a_hidden_layer_updates_it_without_error(detected, qtbot):
    _viewer, widget, _image, spots, _truth = detected
    spots.visible = False
    higher = float(np.median(spots.features["score"]))  # fewer spots: napari's stale view indices overflow
    n = widget.apply_threshold(higher)
    dets = spots.metadata[K.DETECTIONS]
    assert 0 < n == dets.count(higher) < len(dets.candidates) and len(spots.data) == len(spots.features) == n
    assert "updating" not in widget._count.value
    spots.visible = True  # shows the new spots
    assert len(spots._view_data) == n


@pytest.mark.slow
def test_qc_follows_the_threshold_and_clears_when_its_layers_close(detected, qtbot):
    viewer, widget, _image, spots, true_spots = detected
    spots.add(true_spots.data[:30] + 0.2)  # some hits for the random network
    qc = _dock(viewer, "Check against ground truth")
    qc.set_layers(spots, true_spots)
    [row] = qc.compare()
    assert row["n_pred"] == len(spots.data)

    widget.apply_threshold(0.2)  # the user moves the threshold: the numbers must not describe the old spots
    assert "Outdated" in qc.summary
    qtbot.waitUntil(lambda: qc.rows and qc.rows[0]["n_pred"] == len(spots.data), timeout=WAIT_MS)
    assert "Outdated" not in qc.summary
    assert (spots.features["qc"] == "TP").sum() == qc.rows[0]["tp"]

    viewer.layers.remove(spots)  # the image's layers are closed
    assert qc.rows == [] and qc.table_text() == [] and not qc.can_export
    assert "closed" in qc.summary
    assert not [lay for lay in viewer.layers if K.is_qc(lay)]


def test_open_spots_csv_button_uses_the_plugin_reader(make_napari_viewer, tmp_path, monkeypatch):
    from qtpy.QtWidgets import QFileDialog

    viewer = make_napari_viewer()
    correct = _dock(viewer, "Correct spots")
    table = pd.DataFrame({"y": [5.0, 6.5], "x": [7.0, 8.25], "score": [0.9, 0.4]})
    path = tmp_path / "cells.csv"
    write_spots_csv(table, path)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(path), "")))
    correct.open_spots_csv()  # the button
    layer = viewer.layers[-1]
    np.testing.assert_allclose(layer.data, table[["y", "x"]].to_numpy())
    assert layer.features["score"].tolist() == [0.9, 0.4] and same_layer(correct.layer, layer)
    assert layer.metadata[K.SOURCE_FILE] == str(path)

    other = tmp_path / "plate.csv"
    other.write_text("well,count\nA1,3\n")
    assert correct.open_spots_csv(other) is None
    assert "not a spot table" in correct.status.value and "Fix:" in correct.status.value


def _bright_spot(image, truth):
    """A true spot well inside the image, far from other true spots, as bright as any."""
    from scipy.spatial.distance import cdist

    d = cdist(truth, truth) + np.eye(len(truth)) * 1e9
    ok = np.flatnonzero((d.min(axis=1) > 10) & np.all((truth > 20) & (truth < 490), axis=1))
    peak = image[tuple(np.round(truth[ok]).astype(int).T)]
    return truth[ok[np.argmax(peak)]]


@pytest.mark.slow
def test_clicks_outside_the_image_and_snaps_onto_a_spot_are_refused(detected, tmp_path, click):
    viewer, _detect, image, _spots, true_spots = detected
    spot = _bright_spot(image.data, true_spots.data)
    gt = viewer.add_points(spot[None, :], name="mine", features=pd.DataFrame({"source": ["manual"]}))
    correct = _dock(viewer, "Correct spots")
    correct.set_layer(gt)
    correct.set_image(image)
    gt.mode = "add"

    click(gt, (-15.0, 40.0), modifiers=["Shift"])  # exact placement, but off the image
    assert len(gt.data) == 1 and "outside" in correct.status.value
    click(gt, (40.0, 530.0))
    assert len(gt.data) == 1

    near = spot + (1.2, -0.9)
    click(gt, near)  # snapping would put it onto the spot already there: two spots would become one
    assert len(gt.data) == 2
    np.testing.assert_allclose(gt.data[1], near)
    assert "snapped onto an existing spot" in correct.status.value
    assert not correct.redo_button.enabled and correct.undo_button.enabled
    correct.undo()
    assert len(gt.data) == 1  # the refused clicks left no undo steps behind


@pytest.mark.slow
def test_a_adds_at_the_cursor_and_d_deletes_the_spot_under_it(detected, tmp_path):
    from napari.utils.key_bindings import coerce_keybinding

    viewer, _detect, image, spots, true_spots = detected
    spot = _bright_spot(image.data, true_spots.data)
    correct = _dock(viewer, "Correct spots")
    correct.set_layer(spots)
    spots.mode = "pan_zoom"  # no need to switch tools

    def press(key):
        spots.keymap[coerce_keybinding(key)](spots)

    n = len(spots.data)
    viewer.cursor.position = tuple(spot + (0.7, -0.6))
    press("a")
    assert len(spots.data) == n + 1 and np.linalg.norm(spots.data[-1] - spot) < 0.3  # snapped
    assert spots.features["source"].iloc[-1] == "manual"
    viewer.cursor.position = tuple(spots.data[-1] + (1.0, 0.5))
    press("d")
    assert len(spots.data) == n
    viewer.cursor.position = (-50.0, -50.0)
    press("d")  # nothing there: nothing deleted
    assert len(spots.data) == n and "No spot under the cursor" in correct.status.value


@pytest.mark.slow
def test_correction_hides_the_score_map_and_draws_truth_and_hand_spots_apart(detect_widget, tiny_model,
                                                                             run_and_wait, tmp_path):
    from napari.utils.colormaps.standardize_color import transform_color

    from napari_spotdetect.widgets.layers import MANUAL_BORDER, QC_COLOURS, TRUTH_COLOUR

    viewer, widget = detect_widget
    viewer.open_sample("napari-spotdetect", "smfish_2d")
    widget.set_model(tiny_model)
    widget._choices.maps.value = True
    run_and_wait(widget)
    [score_map] = [lay for lay in viewer.layers if K.SCORE_MAP in lay.metadata]
    [spots] = _detections(viewer)
    assert score_map.visible
    correct = _dock(viewer, "Correct spots")
    correct.set_layer(spots)
    correct.set_folder(tmp_path)
    truth = correct.start_ground_truth()
    assert not score_map.visible and not spots.visible  # only the spots being corrected, over the image
    ring = transform_color(TRUTH_COLOUR)[0]
    np.testing.assert_allclose(truth.border_color[0], ring)
    assert all(np.abs(transform_color(c)[0] - ring).max() > 0.2 for c in QC_COLOURS.values())

    truth.add(viewer.layers["true spots"].data[0])
    assert truth.features["source"].iloc[-1] == "manual"
    assert truth.face_color[-1][3] == 0  # hollow: the spot under it stays visible
    np.testing.assert_allclose(truth.border_color[-1], MANUAL_BORDER)
    assert str(truth.symbol[-1]) == "diamond" and str(truth.symbol[0]) == "disc"


def test_time_left_is_estimated_from_the_work_done():
    from napari_spotdetect.widgets.progress_text import TimeLeft, format_seconds

    now = [0.0]
    clock = TimeLeft(now=lambda: now[0])
    now[0] = 10.0  # loading the model and the first tile took 10 s: not the pace of the rest
    assert clock.left(1, 100) == ""  # too early to guess
    now[0] = 34.0  # 24 more tiles in 24 s: 1 s a tile, 75 to go
    assert clock.left(25, 100) == "about 1 min 15 s left"
    assert clock.left(100, 100) == ""
    assert format_seconds(7200 + 600) == "2 h 10 min"
    assert format_seconds(299.6) == "5 min 00 s" and format_seconds(59.6) == "1 min 00 s"


@pytest.mark.slow
def test_review_progress_is_counted_saved_and_resumed(detected, tmp_path):
    viewer, _detect, _image, spots, true_spots = detected
    correct = _dock(viewer, "Correct spots")
    correct.set_layer(spots)
    correct.set_folder(tmp_path)
    truth = correct.start_ground_truth()
    n = len(truth.data)
    assert n >= 3 and correct.review_line.value == f"0 of {n} reviewed · 0 added · 0 deleted"
    correct.next_doubtful()  # N
    correct.next_doubtful()
    correct.next_doubtful(-1)  # back to the first: still two spots looked at
    truth.add(true_spots.data[0])  # placed by hand: reviewed by definition
    truth.selected_data = {int(np.flatnonzero(~truth.features["reviewed"].to_numpy(bool))[0])}
    truth.remove_selected()  # a spot nobody had looked at yet
    correct.refresh_review()
    assert correct.review_line.value == f"3 of {n} reviewed · 1 added · 1 deleted"

    csv = tmp_path / "smFISH_synthetic.csv"
    saved = read_spots_csv(csv)
    assert int(saved["reviewed"].astype(bool).sum()) == 3  # the file keeps the review: it resumes
    viewer.layers.remove(truth)
    reopened = correct.open_spots_csv(csv)
    assert same_layer(correct.layer, reopened)
    assert correct.review_state() == {"n": n, "reviewed": 3, "added": 1, "deleted": 1}
    reopened.selected_data = {0}
    reopened.remove_selected()  # editing the reopened file keeps the earlier deleted predictions too
    assert len(read_spots_csv(tmp_path / "smFISH_synthetic.rejected.csv")) == 2
