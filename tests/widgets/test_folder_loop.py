"""The folder loop, as a user runs it: open a folder, detect, correct, Ctrl+Enter, next image; resume after a
restart; train on everything marked done; the new model detects the next image."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from napari.utils.key_bindings import coerce_keybinding
from tests.finetune_panel import choose_start, small_run, train_and_wait

from napari_spotdetect import layer_keys as K
from napari_spotdetect import load_model
from napari_spotdetect.core.io.spots_io import read_spots_csv
from napari_spotdetect.core.training.synthetic import synthetic_image
from napari_spotdetect.widgets.folder_widget import DONE_KEY, STATE_FILE

# waits end as soon as their condition holds; a loaded 2-core machine may need minutes, never a failure
WAIT_MS = 600_000


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    truths = {}
    for i in range(3):
        img, pts = synthetic_image((96, 96), n_spots=12, seed=20 + i)
        tifffile.imwrite(folder / f"cell{i}.tif", img.astype(np.float32))
        truths[f"cell{i}"] = pts
    return folder, truths


def _panels(make_napari_viewer, tiny_model):
    viewer = make_napari_viewer()
    _dock, panels = viewer.window.add_plugin_dock_widget("napari-spotdetect", "All panels (tabs)")
    panels.detect.set_model(tiny_model)
    return viewer, panels


def _press(viewer, key):
    viewer.keymap[coerce_keybinding(key)](viewer)


def _wait_truth(qtbot, folder_widget, name):
    qtbot.waitUntil(lambda: folder_widget.truth_layer() is not None
                    and folder_widget.truth_layer().metadata[K.TRUTH]["image"] == name, timeout=WAIT_MS)
    return folder_widget.truth_layer()


def _brightest_missed(image, truth, spots):
    from scipy.spatial.distance import cdist

    far = cdist(truth, spots).min(axis=1) > 4 if len(spots) else np.ones(len(truth), bool)
    inside = np.all((truth > 5) & (truth < 90), axis=1) & far
    idx = np.flatnonzero(inside)
    return truth[idx[np.argmax(image[tuple(np.round(truth[idx]).astype(int).T)])]]


@pytest.mark.slow
def test_folder_loop_detect_correct_done_next_resume_and_train(make_napari_viewer, tiny_model, image_folder,
                                                               qtbot, tmp_path):
    folder, truths = image_folder
    viewer, panels = _panels(make_napari_viewer, tiny_model)
    loop = panels.folder
    loop.set_folder(folder)  # opens the first image and detects it
    truth = _wait_truth(qtbot, loop, "cell0")
    csv0 = folder / "cell0.csv"
    assert csv0.exists(), (panels.correct.status.value, panels.correct.where.value)
    assert len(read_spots_csv(csv0)) == len(truth.data)  # saved beside the image at once

    # correct: add a missed spot (it snaps), saved at once
    image = viewer.layers["cell0"]
    missed = _brightest_missed(image.data, truths["cell0"], truth.data)
    truth.add(missed + 0.6)
    n0 = len(truth.data)
    assert len(read_spots_csv(csv0)) == n0

    _press(viewer, DONE_KEY)  # done, next
    state = json.loads((folder / STATE_FILE).read_text())
    assert state["done"]["cell0.tif"]["n_spots"] == n0 and state["done"]["cell0.tif"]["added"] == 1
    assert "cell0" not in viewer.layers and not [lay for lay in viewer.layers
                                                  if (lay.metadata.get(K.TRUTH) or {}).get("image") == "cell0"]
    truth1 = _wait_truth(qtbot, loop, "cell1")
    assert (folder / "cell1.csv").exists()
    truth1.add(truths["cell1"][:3])
    truth1.selected_data = {len(truth1.data) - 1}
    truth1.remove_selected()
    n1 = len(truth1.data)
    loop._done.changed.emit(True)  # the button does the same as the key
    _wait_truth(qtbot, loop, "cell2")
    assert loop.current == 2 and "2 of 3 images done" in loop.summary

    # a restart: the work resumes where it was; a done image opens with its annotation, not a new detection
    viewer.close()  # a new viewer is a new session: it remembers no file the first one wrote
    viewer2, panels2 = _panels(make_napari_viewer, tiny_model)
    loop2 = panels2.folder
    loop2.set_folder(folder)
    assert loop2.current == 2  # the first image not done
    assert loop2.image_marks() == ["✓", "✓", "✎"]
    calls = tiny_model.calls
    loop2.open_image(1)
    back = loop2.truth_layer()
    assert back is not None and len(back.data) == n1 and tiny_model.calls == calls
    before = (folder / "cell1.csv").read_bytes()
    back.selected_data = {0}
    back.remove_selected()  # editing it again saves into the same file, after a backup of the old one
    assert (folder / "cell1.csv.bak").read_bytes() == before
    assert len(read_spots_csv(folder / "cell1.csv")) == n1 - 1

    # train on everything marked done, from the fine-tune panel
    loop2.train_on_done()
    tune = panels2.finetune
    assert tune.examples.source.value == "done" and panels2.tabs.currentWidget() is tune.native
    small_run(tune, tmp_path / "models", epochs=1, steps=2)
    # a new session has no "last detection" model (models belong to their viewer): start from the file
    from napari_spotdetect.core.weights.native import save_model

    save_model(tiny_model, tmp_path / "start.pt")
    choose_start(tune, "file", tmp_path / "start.pt")
    train_and_wait(tune, qtbot)
    card = load_model(tmp_path / "models" / "tuned.pt", device="cpu").info.card
    assert card["training_data"]["images_marked_done"] == ["cell0.tif", "cell1.tif"]

    # the new model detects the next image
    tune.new_model.use_button.native.click()
    loop2.open_image(2)
    assert (folder / "cell2.csv").exists()  # annotated (not done) in the first session: its annotation opened
    (folder / "cell2.csv").unlink()  # start it afresh, to see what the new model finds
    loop2.open_image(2)
    _wait_truth(qtbot, loop2, "cell2")
    [spots] = [lay for lay in viewer2.layers if K.is_detection(lay)]
    assert spots.metadata[K.PROVENANCE]["model"] == "tuned"


def test_done_without_an_annotation_is_refused(make_napari_viewer, tiny_model, image_folder, qtbot):
    folder, _truths = image_folder
    viewer, panels = _panels(make_napari_viewer, tiny_model)
    loop = panels.folder
    loop.set_auto_detect(False)  # open without detecting
    loop.set_folder(folder)
    assert loop.current == 0 and "cell0" in viewer.layers
    assert not loop.mark_done_and_next()
    assert loop.current == 0 and "no ground truth yet" in loop.status and "Fix:" in loop.status
    assert not (folder / STATE_FILE).exists()


def test_after_a_restart_a_done_image_can_be_checked_against_its_detections(make_napari_viewer, tiny_model,
                                                                             image_folder, qtbot):
    """A restart reopened a done image with its ground truth only: the Check tab had nothing to compare
    (issue 23, item 8). The detections the truth started from are kept with the folder's files."""
    folder, truths = image_folder
    viewer, panels = _panels(make_napari_viewer, tiny_model)
    loop = panels.folder
    loop.set_folder(folder)  # opens cell0 and detects it
    truth = _wait_truth(qtbot, loop, "cell0")
    [spots] = [lay for lay in viewer.layers if K.is_detection(lay)]
    n_detected = panels.detect.apply_threshold(panels.detect._threshold.min)  # the random model: low
    assert n_detected == len(spots.data) >= 1
    model = spots.metadata[K.PROVENANCE]["model"]
    truth.add(truths["cell0"][:2])  # corrected: two missed spots added
    n_truth = len(truth.data)
    loop._done.native.click()  # done, next
    viewer.close()

    viewer2, panels2 = _panels(make_napari_viewer, tiny_model)
    loop2 = panels2.folder
    loop2.set_auto_detect(False)
    loop2.set_folder(folder)
    calls = tiny_model.calls
    loop2.open_image(0)
    assert tiny_model.calls == calls  # nothing detected again: the kept detections came back
    [back] = [lay for lay in viewer2.layers if K.is_detection(lay)]
    assert len(back.data) == n_detected and back.metadata[K.PROVENANCE]["model"] == model
    panels2.show_tab("Check")
    assert panels2.qc.chosen == (back, loop2.truth_layer())
    panels2.qc._run.native.click()  # Compare
    row = panels2.qc.rows[0]
    assert row["tp"] + row["fp"] == n_detected and row["tp"] + row["fn"] == n_truth and row["fn"] >= 2
    loop2.open_image(1)  # the kept detections close with their image
    assert not [lay for lay in viewer2.layers if K.is_detection(lay)]
