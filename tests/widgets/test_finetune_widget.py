"""Fine-tuning in a real (headless) viewer: pair layers, train in a thread, watch the plot, stop, adopt."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.finetune_panel import (
    WAIT_MS,
    choose_example,
    choose_start,
    click_train,
    set_settings,
    small_run,
    train_and_wait,
)

from napari_spotdetect import layer_keys as K
from napari_spotdetect import load_model
from napari_spotdetect.core.errors import SpotDetectError
from napari_spotdetect.widgets.finetune_examples import pairs_from_layers
from napari_spotdetect.widgets.model_registry import registry_for


def _small_settings(tune, tmp_path, epochs=2, steps=3):
    small_run(tune, tmp_path / "models", epochs=epochs, steps=steps)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.net.state_dict().items()}


def _detect_on_sample(viewer, detect, tiny_model, qtbot):
    viewer.open_sample("napari-spotdetect", "smfish_2d")
    detect.set_image(viewer.layers["smFISH (synthetic)"])
    detect.set_model(tiny_model)
    assert detect.run() is not None
    qtbot.waitUntil(lambda: not detect.running, timeout=WAIT_MS)


@pytest.mark.slow
def test_finetune_from_last_detection_plot_grows_and_the_new_model_is_adopted(finetune_widget, qtbot, tiny_model,
                                                                              tmp_path):
    viewer, detect, tune = finetune_widget
    _detect_on_sample(viewer, detect, tiny_model, qtbot)
    before = _weights(tiny_model)
    # the sample's true spots stand in for a corrected detection
    choose_example(tune, viewer.layers["smFISH (synthetic)"], viewer.layers["true spots"])
    choose_start(tune, "last")
    _small_settings(tune, tmp_path)

    click_train(tune)
    qtbot.waitUntil(lambda: len(tune.plot.step_loss) >= 1, timeout=WAIT_MS)
    seen = len(tune.plot.step_loss)
    assert tune.running and not tune.train_button.enabled and tune.stop_button.enabled
    qtbot.waitUntil(lambda: len(tune.plot.step_loss) > seen, timeout=WAIT_MS)  # the plot keeps growing
    qtbot.waitUntil(lambda: not tune.running, timeout=WAIT_MS)

    assert tune.status.value == "Training finished.", tune.status.value
    assert len(tune.plot.step_loss) == 6  # 2 epochs x 3 steps, in order, spread over the epoch axis
    assert [x for x, _ in tune.plot.step_loss] == sorted(x for x, _ in tune.plot.step_loss)
    assert [x for x, _ in tune.plot.val_f1] == [0, 1, 2]  # the starting model, then each epoch
    assert len(tune.plot.epoch_loss) == 2
    path = tmp_path / "models" / "tuned.pt"
    on_disk = load_model(path, device="cpu")
    entry = next(e for e in registry_for(viewer).models.values() if e.model.info.name == "tuned")
    assert on_disk.default_threshold == pytest.approx(entry.model.default_threshold)
    card = on_disk.info.card
    assert card["mode"] == "finetune" and card["base_model"] == "tiny-random"
    assert card["training_data"]["layers"] == [["smFISH (synthetic)", "true spots"]]
    assert "f1" in card["validation_before"]
    if card["kept_starting_weights"]:  # epoch 0 competes: no epoch beat the random start here
        assert card["epoch"] == 0 and "No epoch beat the starting model" in tune.new_model.outcome.value
    else:
        assert card["validation"]["f1"] == pytest.approx(max(f1 for x, f1 in tune.plot.val_f1 if x > 0))
    assert "F1" in tune.new_model.outcome.value and str(path) in tune.new_model.outcome.value
    assert tune.settings.model_name.value == "tuned-2"  # Train can be pressed again without overwriting
    # nothing changed for detection until the user accepts: same weights, same choice
    for k, v in _weights(tiny_model).items():
        assert torch.equal(v, before[k]), k
    assert detect._choices.model_kind.value == "memory"
    assert entry.key in detect._choices.model_kind.choices  # ...but it is offered at once

    tune.new_model.use_run_button.native.click()  # "Use it and detect again"
    assert detect._choices.model_kind.value == entry.key
    qtbot.waitUntil(lambda: not detect.running, timeout=WAIT_MS)
    spots = [lay for lay in viewer.layers if K.PROVENANCE in lay.metadata]  # one result per model, side by side
    assert sorted(lay.metadata[K.PROVENANCE]["model"] for lay in spots) == ["tiny-random", "tuned"]
    assert "now uses tuned" in tune.new_model.outcome.value


@pytest.mark.slow
def test_stop_midway_keeps_a_loadable_best_checkpoint(finetune_widget, qtbot, tiny_model, tmp_path):
    viewer, detect, tune = finetune_widget
    viewer.open_sample("napari-spotdetect", "smfish_2d")
    choose_example(tune, viewer.layers["smFISH (synthetic)"], viewer.layers["true spots"])
    model_file = tmp_path / "start.pt"
    from napari_spotdetect.core.weights.native import save_model

    save_model(tiny_model, model_file)
    choose_start(tune, "file", model_file)
    _small_settings(tune, tmp_path, epochs=4, steps=3)
    click_train(tune)
    qtbot.waitUntil(lambda: len(tune.plot.val_f1) >= 2, timeout=WAIT_MS)  # the first epoch is validated
    tune.stop_button.native.click()
    at_stop = len(tune.plot.step_loss)
    assert "Stopping" in tune.status.value and not tune.stop_button.enabled
    qtbot.waitUntil(lambda: not tune.running, timeout=WAIT_MS)

    assert tune.status.value == "Stopped."
    assert len(tune.plot.step_loss) <= at_stop + 1 < 12  # within one step of the click, long before the end
    best = tmp_path / "models" / "tuned_checkpoints" / "tuned_best.pt"
    saved = tmp_path / "models" / "tuned.pt"
    assert best.exists() and saved.exists()
    for path in (best, saved):
        m = load_model(path, device="cpu")
        assert m.info.card["epoch"] in (0, 1)  # the first epoch, or the start it did not beat
    assert "Stopped early" in tune.new_model.outcome.value and tune.new_model.use_button.enabled
    tune.new_model.use_button.native.click()
    entry = next(e for e in registry_for(viewer).models.values() if e.model.info.name == "tuned")
    assert detect._choices.model_kind.value == entry.key


@pytest.mark.slow
def test_finetune_from_a_folder_of_images_and_csvs(finetune_widget, qtbot, tiny_model, tmp_path):
    import pandas as pd

    from napari_spotdetect.core.training.synthetic import synthetic_image
    from napari_spotdetect.core.weights.native import save_model

    viewer, _detect, tune = finetune_widget
    data = tmp_path / "annotated"
    data.mkdir()
    for i in range(2):
        img, pts = synthetic_image((96, 96), n_spots=15, seed=i)
        np.save(data / f"cell{i}.npy", img)
        pd.DataFrame({"y": pts[:, 0], "x": pts[:, 1]}).to_csv(data / f"cell{i}.csv", index=False)
    save_model(tiny_model, tmp_path / "start.pt")
    tune.examples.source.value = "folder"
    tune.examples.folder.value = data
    choose_start(tune, "file", tmp_path / "start.pt")
    _small_settings(tune, tmp_path, epochs=1, steps=2)
    train_and_wait(tune, qtbot)
    card = load_model(tmp_path / "models" / "tuned.pt", device="cpu").info.card
    assert card["training_data"]["folder"] == str(data.resolve()) and card["training_data"]["n_examples"] == 2
    assert card["n_train_images"] == 1 and card["n_val_images"] == 1  # 20 % of 2 images, at least one


def test_train_is_refused_with_clear_messages(finetune_widget, tmp_path):
    viewer, _detect, tune = finetune_widget
    assert not tune.train_button.enabled and "Pick an image" in tune.status.value  # an empty viewer
    viewer.add_image(np.zeros((4, 64, 64), np.float32), name="stack")
    viewer.add_points(np.array([[10.0, 10]]), name="plane spots")
    choose_example(tune, viewer.layers["stack"], viewer.layers["plane spots"])
    assert "2-D points" in tune.status.value and not tune.train_button.enabled
    tune.train_button.native.click()  # a click that slips through starts nothing
    assert not tune.running and "2-D points" in tune.status.value
    flat = viewer.add_image(np.zeros((64, 64), np.float32), name="plane")
    empty = viewer.add_points(np.zeros((0, 2)), name="empty", ndim=2)
    choose_example(tune, flat, empty)
    assert "has no points" in tune.status.value
    tune.examples.rows[0].remove.native.click()
    assert "Add an image" in tune.status.value
    tune.examples.source.value = "folder"
    assert not tune.examples.add_button.visible  # the example rows give way to the folder
    assert "folder" in tune.status.value
    tune.examples.folder.value = tmp_path
    choose_start(tune, "file")
    assert "model file" in tune.status.value
    (tmp_path / "m.pt").write_bytes(b"x")
    choose_start(tune, "file", tmp_path / "m.pt")
    set_settings(tune, save_in=tmp_path, model_name="m")
    assert "already exists" in tune.status.value and not tune.train_button.enabled
    tune.settings.model_name.value = "m2"
    assert tune.status.value == "Ready to train." and tune.train_button.enabled


def test_points_are_mapped_into_image_pixels(make_napari_viewer):
    viewer = make_napari_viewer()
    img = viewer.add_image(np.zeros((40, 50), np.float32), scale=(0.5, 0.5), translate=(2.0, 0.0))
    pts = viewer.add_points(np.array([[3.0, 5.0], [100.0, 100.0]]), scale=(1.0, 1.0))  # world coordinates
    [(data, yx)] = pairs_from_layers(img, pts)
    assert data.shape == (40, 50)
    np.testing.assert_allclose(yx, [[2.0, 10.0]])  # (3 - 2) / 0.5, 5 / 0.5; the point off the image is dropped


def test_a_stack_gives_one_example_per_annotated_plane(make_napari_viewer):
    viewer = make_napari_viewer()
    stack = np.arange(5 * 30 * 40, dtype=np.float32).reshape(5, 30, 40)
    img = viewer.add_image(stack, scale=(2.0, 1.0, 1.0))
    # world z 2.2 -> plane 1, world z 7.9 -> plane 4 (two spots), nothing on planes 0, 2, 3
    pts = viewer.add_points(np.array([[2.2, 5.0, 6.0], [7.9, 10.0, 11.0], [8.1, 20.0, 30.0]]))
    pairs = pairs_from_layers(img, pts)
    assert [p[0].shape for p in pairs] == [(30, 40), (30, 40)]
    np.testing.assert_array_equal(pairs[0][0], stack[1])
    np.testing.assert_array_equal(pairs[1][0], stack[4])
    np.testing.assert_allclose(pairs[0][1], [[5.0, 6.0]])
    np.testing.assert_allclose(pairs[1][1], [[10.0, 11.0], [20.0, 30.0]])
    flat = viewer.add_points(np.array([[5.0, 6.0]]), name="2-D points")
    with pytest.raises(SpotDetectError, match="2-D points"):
        pairs_from_layers(img, flat)


@pytest.mark.slow
def test_finetune_from_the_stack_sample_learns_from_each_annotated_plane(finetune_widget, qtbot, tiny_model,
                                                                         tmp_path):
    viewer, detect, tune = finetune_widget
    viewer.open_sample("napari-spotdetect", "smfish_stack")
    stack = next(lay for lay in viewer.layers if lay.data.ndim == 3 and not lay.name.endswith("spots"))
    truth = next(lay for lay in viewer.layers if lay.name == "true spots")
    n_planes = len(np.unique(np.rint(truth.data[:, 0])))
    assert n_planes > 1
    choose_example(tune, stack, truth)
    from napari_spotdetect.core.weights.native import save_model

    save_model(tiny_model, tmp_path / "start.pt")
    choose_start(tune, "file", tmp_path / "start.pt")
    _small_settings(tune, tmp_path, epochs=1, steps=2)
    train_and_wait(tune, qtbot)
    card = load_model(tmp_path / "models" / "tuned.pt", device="cpu").info.card
    assert card["n_train_images"] + card["n_val_images"] == n_planes  # one example per plane with spots


# -- one engine: the panel's defaults and entry point are the core's (the CLI's too) -----------------------
@pytest.mark.slow
def test_the_panel_starts_from_the_core_defaults_and_trains_through_the_core(finetune_widget, qtbot, tiny_model,
                                                                              tmp_path, monkeypatch):
    from napari_spotdetect.core.training import finetuning
    from napari_spotdetect.core.training.finetune_defaults import DEFAULTS as FT
    from napari_spotdetect.core.weights.native import save_model

    viewer, _detect, tune = finetune_widget
    s = tune.settings
    assert (s.epochs.value, s.steps.value, s.lr.value, s.loss.value, s.crop.value, s.batch.value) == (
        FT.epochs, FT.steps_per_epoch, FT.lr, FT.loss, FT.crop, FT.batch_size)
    assert s.val_percent.value == round(100 * FT.val_share)
    calls = []
    real = finetuning.iter_finetune

    def spy(*a, **kw):
        calls.append((a, kw))
        return (yield from real(*a, **kw))

    monkeypatch.setattr(finetuning, "iter_finetune", spy)
    viewer.open_sample("napari-spotdetect", "smfish_2d")
    choose_example(tune, viewer.layers["smFISH (synthetic)"], viewer.layers["true spots"])
    save_model(tiny_model, tmp_path / "start.pt")
    choose_start(tune, "file", tmp_path / "start.pt")
    _small_settings(tune, tmp_path, epochs=1, steps=1)
    train_and_wait(tune, qtbot)
    [(args, kw)] = calls
    assert kw["val_share"] == pytest.approx(FT.val_share) and kw["out"] == tmp_path / "models" / "tuned.pt"
    # the core's fine-tuning config with the panel's sizes (the device too: TrainConfig's, the one setting)
    assert args[3] == finetuning.finetune_config(epochs=1, steps_per_epoch=1, crop=64, batch_size=2)


@pytest.mark.slow
def test_the_plots_starting_f1_is_what_the_qc_panel_reports(finetune_widget, qtbot, tiny_model, tmp_path):
    """Same model, image and radius: epoch 0 of the training plot and the QC panel show one number."""
    viewer, detect, tune = finetune_widget
    _detect_on_sample(viewer, detect, tiny_model, qtbot)
    spots = next(lay for lay in viewer.layers if K.PROVENANCE in lay.metadata)
    truth = viewer.layers["true spots"]
    _d, qc = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Check against ground truth")
    from napari_spotdetect.core.training.finetune_defaults import DEFAULTS as FT

    qc.set_layers(spots, truth, radius=FT.radius, all_images=False)
    [row] = qc.compare()
    choose_example(tune, viewer.layers["smFISH (synthetic)"], truth)
    choose_start(tune, "last")
    _small_settings(tune, tmp_path, epochs=1, steps=1)
    train_and_wait(tune, qtbot)
    x0, f1_0 = tune.plot.val_f1[0]
    assert x0 == 0 and f1_0 == pytest.approx(row["f1"], abs=1e-9)
    before = load_model(tmp_path / "models" / "tuned.pt", device="cpu").info.card["validation_before"]
    assert before["f1_integral"] == pytest.approx(row["f1_integral"], abs=1e-9)
    assert all(loss >= 0 for _x, loss in tune.plot.step_loss)  # a positive loss on the plot


def test_each_viewer_has_its_own_session_models(make_napari_viewer, tiny_model):
    """A model fine-tuned in one viewer is offered there, not in another viewer of the same process."""
    v1, v2 = make_napari_viewer(), make_napari_viewer()
    _d, detect1 = v1.window.add_plugin_dock_widget("napari-spotdetect", "Detect spots")
    _d, detect2 = v2.window.add_plugin_dock_widget("napari-spotdetect", "Detect spots")
    assert registry_for(v1) is not registry_for(v2) and registry_for(v1) is registry_for(v1)
    entry = registry_for(v1).add(tiny_model)
    assert entry.key in detect1._choices.model_kind.choices and entry.key not in detect2._choices.model_kind.choices
    assert registry_for(v1).use(entry) == 1  # only the panel of that viewer listens
    assert detect1._choices.model_kind.value == entry.key
