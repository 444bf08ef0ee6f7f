"""The adaptation loop in a real (headless) viewer: draw a region, mark its spots, calibrate, detect again;
suggest where to click next; fine-tune only inside regions; a 0 % validation share; the start kept."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtWidgets import QScrollArea
from tests.adapt_scenes import LEFT, RIGHT, f1_in, faint_spots_scene
from tests.finetune_panel import choose_example, choose_start, set_settings, train_and_wait

from napari_spotdetect import layer_keys as K
from napari_spotdetect import load_model
from napari_spotdetect.core.groundtruth.regions import inside
from napari_spotdetect.widgets import adapt_widget

WAIT_MS = 600_000


@pytest.fixture
def loop(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """A viewer with the faint-spots image detected by the bundled model, and the adapt panel docked."""
    monkeypatch.setattr(adapt_widget, "DEFAULT_OUT", tmp_path / "models")  # never the user's home folder
    viewer = make_napari_viewer()
    img, truth = faint_spots_scene()
    viewer.add_image(img, name="cells")
    _d, detect = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Detect spots")
    detect.set_image(viewer.layers["cells"])
    detect.set_model(load_model("default", device="cpu"))
    assert detect.run() is not None
    qtbot.waitUntil(lambda: not detect.running, timeout=WAIT_MS)
    _d, adapt = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Teach it your spots")
    det = next(lay for lay in viewer.layers if K.is_detection(lay))
    return viewer, detect, adapt, det, truth


def _click(button):
    button.native.click()


def test_draw_a_region_mark_its_spots_calibrate_and_detect_again(loop, qtbot):
    viewer, detect, adapt, det, truth = loop
    before = f1_in(det.data, truth, RIGHT)
    _click(adapt._draw)
    regions = viewer.layers[adapt_widget.REGIONS_LAYER]
    assert regions.mode == "add_rectangle" and viewer.layers.selection.active is regions
    regions.add_rectangles(np.array([[0, 0], [127, 127]]))  # the drag of a rectangle over the left square
    mine = truth[inside(truth, LEFT)]
    viewer.add_points(mine, name="my spots")  # every spot in the square, clicked
    adapt._spots.value = viewer.layers["my spots"]
    adapt._regions.value = regions

    _click(adapt._calibrate)
    assert "Calibrated" in adapt._status.value, adapt._status.value
    assert adapt.calibration.threshold < 0.05 and adapt.calibration.n_spots == len(mine)
    # the detection follows at once (no network): more of the faint spots, a better match on the unseen half
    assert f1_in(det.data, truth, RIGHT) >= before + 0.04
    assert adapt._use_run.enabled

    _click(adapt._use_run)  # "Use it and detect again": the calibrated model detects
    qtbot.waitUntil(lambda: not detect.running, timeout=WAIT_MS)
    new = [lay for lay in viewer.layers if K.is_detection(lay) and lay is not det]
    assert len(new) == 1 and new[0].metadata[K.PROVENANCE]["model"] == "default-calibrated"
    assert f1_in(new[0].data, truth, RIGHT) >= before + 0.04
    saved = load_model(next((adapt_widget.DEFAULT_OUT).glob("*.pt")), device="cpu")
    assert saved.default_threshold == pytest.approx(adapt.calibration.threshold)


def test_calibrate_without_a_region_says_what_to_do(loop):
    _viewer, _detect, adapt, det, _truth = loop
    n = len(det.data)
    _click(adapt._calibrate)
    assert "No region drawn" in adapt._status.value and len(det.data) == n


def test_suggest_where_to_click_next_avoids_the_annotated_region(loop):
    viewer, _detect, adapt, _det, _truth = loop
    _click(adapt._draw)
    viewer.layers[adapt_widget.REGIONS_LAYER].add_rectangles(np.array([[0, 0], [127, 127]]))
    _click(adapt._suggest)
    layer = viewer.layers[adapt_widget.SUGGESTION_LAYER]
    assert len(layer.data) == 1
    corners = np.asarray(layer.data[0])
    assert corners[:, 1].min() >= 127  # not over the region already annotated
    assert np.allclose(viewer.camera.center[-2:], corners.mean(axis=0), atol=1)
    assert "magenta" in adapt._status.value




def test_a_zero_validation_share_validates_on_the_training_examples(finetune_widget, qtbot, tiny_model, tmp_path):
    from napari_spotdetect.core.training.synthetic import synthetic_image

    viewer, _detect, tune = finetune_widget
    for k in range(2):
        img, pts = synthetic_image((64, 64), n_spots=6, seed=k)
        viewer.add_image(img, name=f"img{k}")
        viewer.add_points(pts, name=f"pts{k}")
        choose_example(tune, viewer.layers[f"img{k}"], viewer.layers[f"pts{k}"], row=k)
    from napari_spotdetect.core.weights.native import save_model

    save_model(tiny_model, tmp_path / "start.pt")
    choose_start(tune, "file", tmp_path / "start.pt")
    set_settings(tune, epochs=1, steps=1, crop=32, batch=1, val_percent=0, save_in=tmp_path / "models", model_name="z")
    train_and_wait(tune, qtbot)
    card = load_model(tmp_path / "models" / "z.pt", device="cpu").info.card
    # 0 % means: check on the training examples (both), not a silent 20 % hold-out
    assert card["n_train_images"] == 2 and card["n_val_images"] == 2
    assert "training examples" in card["validation_data"] and "training examples" in tune.new_model.outcome.value


def test_when_no_epoch_beats_the_start_the_panel_says_so_and_keeps_it(finetune_widget, qtbot, tmp_path):
    from napari_spotdetect.core.training.synthetic import synthetic_image

    viewer, _detect, tune = finetune_widget
    img, pts = synthetic_image((128, 128), n_spots=30, seed=7)  # bright, isolated: the bundled model is perfect
    viewer.add_image(img, name="easy")
    viewer.add_points(pts, name="its spots")
    assert tune.examples.regions.value is None  # "the whole images": the default
    choose_example(tune, viewer.layers["easy"], viewer.layers["its spots"])
    choose_start(tune, "default")
    set_settings(tune, epochs=1, steps=2, crop=64, batch=2, lr=1e-3, save_in=tmp_path / "models", model_name="k")
    train_and_wait(tune, qtbot)
    saved = load_model(tmp_path / "models" / "k.pt", device="cpu")
    assert saved.info.card["kept_starting_weights"] and saved.info.card["epoch"] == 0
    assert "No epoch beat the starting model" in tune.new_model.outcome.value and tune.new_model.use_button.enabled
    start = load_model("default", device="cpu")
    for k, v in start.net.state_dict().items():
        assert np.array_equal(v.numpy(), saved.net.state_dict()[k].float().numpy()), k
    # the verdict and the Use buttons are scrolled into view when training ends
    scroll = tune.native.findChild(QScrollArea)
    assert scroll.verticalScrollBar().value() == scroll.verticalScrollBar().maximum() or \
        not tune.new_model.use_run_button.native.visibleRegion().isEmpty()


@pytest.mark.slow
def test_a_crop_fine_tuned_as_a_region_in_the_panel_ends_no_worse_on_the_rest(finetune_widget, qtbot, tmp_path):
    """The crop that collapses a naive fine-tune (tests/test_cli_adapt.py), drawn as a rectangle over the whole
    image in the Fine-tune panel: the result is not below the starting model on the unannotated half."""
    from tests.adapt_scenes import CROP, RIGHT_HALF, bright_corner_scene

    from napari_spotdetect import detect

    viewer, _detect, tune = finetune_widget
    img, truth = bright_corner_scene()
    mine = truth[inside(truth, CROP)]
    viewer.add_image(img, name="tissue")
    viewer.add_points(mine, name="my spots")  # every spot inside the rectangle, nothing outside it
    y0, x0, y1, x1 = CROP
    shapes = viewer.add_shapes([np.array([[y0, x0], [y0, x1 - 1], [y1 - 1, x1 - 1], [y1 - 1, x0]])],
                               shape_type="rectangle", name="my region")
    choose_example(tune, viewer.layers["tissue"], viewer.layers["my spots"])
    tune.examples.regions.reset_choices()
    tune.examples.regions.value = shapes  # "Only inside": the rectangle
    choose_start(tune, "default")
    set_settings(tune, epochs=3, steps=8, crop=96, decoder_only=True, threads=1, save_in=tmp_path / "models",
                 model_name="region")
    train_and_wait(tune, qtbot)
    tuned = load_model(tmp_path / "models" / "region.pt", device="cpu")
    card = tuned.info.card
    assert card["training_data"]["regions"] == "my region" and card["validation_data"] == "given"
    assert card["train_config"]["freeze_encoder"]
    start = load_model("default", device="cpu")
    before = f1_in(detect(img, start, keep_maps=False).spots[["y", "x"]].to_numpy(), truth, RIGHT_HALF)
    after = f1_in(detect(img, tuned, keep_maps=False).spots[["y", "x"]].to_numpy(), truth, RIGHT_HALF)
    assert after >= before - 1e-9, (before, after)
    assert "validation F1" in tune.new_model.outcome.value
