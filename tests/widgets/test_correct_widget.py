"""Correcting detections by hand in a real (headless) viewer: snap, reject, autosave, undo, review list."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import cdist

from napari_spotdetect import layer_keys as K
from napari_spotdetect.core.io.spots_io import read_spots_csv


def _open(viewer):
    _dock, w = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Correct spots")
    return w


def _csv_coords(path):
    return read_spots_csv(path)[["y", "x"]].to_numpy()


def _isolated_bright_truth(image, truth, avoid, k=2):
    """True spots far from other truths and from ``avoid`` points, brightest first."""
    d_t = cdist(truth, truth) + np.eye(len(truth)) * 1e9
    d_a = cdist(truth, avoid).min(axis=1) if len(avoid) else np.full(len(truth), 1e9)
    ok = (d_t.min(axis=1) > 8) & (d_a > 6) & np.all((truth > 10) & (truth < 500), axis=1)
    idx = np.flatnonzero(ok)
    peak = image[np.round(truth[idx, 0]).astype(int), np.round(truth[idx, 1]).astype(int)]
    return truth[idx[np.argsort(-peak)[:k]]]


@pytest.mark.slow
def test_ground_truth_from_detections_is_corrected_and_saved_after_each_edit(detected_2d, tmp_path, click, qtbot):
    viewer, image, spots, true_spots = detected_2d
    w = _open(viewer)
    w.set_layer(spots)
    w.set_folder(tmp_path)
    gt = w.start_ground_truth()
    csv, rejected_csv = tmp_path / "smFISH_synthetic.csv", tmp_path / "smFISH_synthetic.rejected.csv"
    assert gt.metadata[K.TRUTH]["image"] == image.name and w.layer.name == gt.name
    np.testing.assert_allclose(_csv_coords(csv), spots.data, atol=1e-5)
    n0 = len(gt.data)
    assert n0 > 0 and not rejected_csv.exists()

    # delete a false spot: the prediction farthest from any true spot
    false_i = int(np.argmax(cdist(gt.data, true_spots.data).min(axis=1)))
    false_xy, false_score = gt.data[false_i].copy(), gt.features["score"].iloc[false_i]
    gt.selected_data = {false_i}
    gt.remove_selected()
    saved = _csv_coords(csv)
    assert len(saved) == n0 - 1 and cdist([false_xy], saved).min() > 1e-3
    rej = read_spots_csv(rejected_csv)
    np.testing.assert_allclose(rej[["y", "x"]].to_numpy(), [false_xy], atol=1e-5)
    assert rej["score"].tolist() == pytest.approx([false_score], abs=1e-5)
    assert len(gt.metadata[K.REJECTED]) == 1

    # add a missed spot by clicking next to it (add mode): it snaps onto the true centre
    missed, other = _isolated_bright_truth(image.data, true_spots.data, gt.data)
    gt.mode = "add"
    click(gt, missed + (0.9, -0.8))
    assert len(gt.data) == n0
    assert np.linalg.norm(gt.data[-1] - missed) < 0.3
    assert gt.features["source"].iloc[-1] == "manual" and np.isnan(gt.features["score"].iloc[-1])
    last = read_spots_csv(csv).iloc[-1]
    assert last["source"] == "manual" and np.hypot(last["y"] - missed[0], last["x"] - missed[1]) < 0.3

    # with Shift held, the point stays exactly where it was clicked
    target = other + (0.9, -0.8)
    click(gt, target, modifiers=["Shift"])
    np.testing.assert_allclose(gt.data[-1], target)
    assert gt.features["source"].iloc[-1] == "manual"
    np.testing.assert_allclose(_csv_coords(csv)[-1], target, atol=1e-5)

    # snapping off (the G shortcut's action) also places exactly
    w.toggle_snap()
    gt.add(other + (1.0, 1.0))
    np.testing.assert_allclose(gt.data[-1], other + (1.0, 1.0))
    w.toggle_snap()

    # move a spot by dragging it in select mode: one undo step, saved when the mouse is released
    gt.mode = "select"
    start = gt.data[0].copy()
    click(gt, start, drag_to=start + (3.0, 2.0))
    qtbot.wait(20)
    np.testing.assert_allclose(gt.data[0], start + (3.0, 2.0), atol=1e-6)
    np.testing.assert_allclose(_csv_coords(csv)[0], start + (3.0, 2.0), atol=1e-5)

    # undo, step by step; the file follows
    w.undo()
    np.testing.assert_allclose(gt.data[0], start, atol=1e-6)
    np.testing.assert_allclose(_csv_coords(csv)[0], start, atol=1e-5)
    w.undo()
    w.undo()
    assert len(gt.data) == n0 and len(_csv_coords(csv)) == n0
    w.undo()  # the snapped add
    assert len(gt.data) == n0 - 1 and cdist([missed], _csv_coords(csv)).min() > 0.3
    w.undo()  # the delete: the prediction is back with its score, and no longer rejected
    assert len(gt.data) == n0 and not rejected_csv.exists() and len(gt.metadata[K.REJECTED]) == 0
    back = read_spots_csv(csv)
    np.testing.assert_allclose(back[["y", "x"]].to_numpy(), spots.data, atol=1e-5)
    assert (back["source"] == "predicted").all()
    w.redo()
    assert len(gt.data) == n0 - 1 and rejected_csv.exists()


@pytest.mark.slow
def test_review_list_starts_with_the_least_confident_and_goes_there(detected_2d):
    viewer, _image, spots, _truth = detected_2d
    w = _open(viewer)
    w.set_layer(spots)
    table = w.review_table  # the list as the panel shows it: score, y, x, source
    scores = [float(table.item(r, 0).text()) for r in range(min(5, table.rowCount()))]
    assert scores == sorted(scores) and scores[0] == pytest.approx(spots.features["score"].min(), abs=0.005)
    w.next_doubtful()  # the N shortcut
    i = int(spots.features["score"].to_numpy().argmin())
    assert spots.selected_data == {i}
    np.testing.assert_allclose(viewer.camera.center[-2:], spots.data_to_world(spots.data[i])[-2:], atol=1e-3)
    w.next_doubtful()
    assert spots.selected_data == {int(np.argsort(spots.features["score"].to_numpy(), kind="stable")[1])}


def test_stack_point_snaps_in_its_own_plane(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-spotdetect", "smfish_stack")
    image, truth = viewer.layers["smFISH stack (synthetic)"], viewer.layers["true spots"]
    gt = viewer.add_points(np.zeros((0, 3)), ndim=3, name="manual", features=pd.DataFrame({"source": []}))
    w = _open(viewer)
    w.set_layer(gt)
    w.set_image(image)
    z, y, x = truth.data[np.argmax(image.data[tuple(np.round(truth.data).astype(int).T)])]
    gt.add([round(z), y + 0.8, x - 0.7])
    assert gt.data[-1, 0] == round(z)
    assert np.hypot(gt.data[-1, 1] - y, gt.data[-1, 2] - x) < 0.3
    w.detach()
    assert w._on_mouse not in gt.mouse_drag_callbacks


@pytest.mark.slow
def test_unsaved_ground_truth_says_where_to_save(detected_2d):
    viewer, _image, spots, _truth = detected_2d
    w = _open(viewer)
    w.set_layer(spots)
    w.truth.value = True  # the sample has no file and no folder is chosen
    assert "choose a folder" in w.status.value and "NOT saved" in w.status.value
