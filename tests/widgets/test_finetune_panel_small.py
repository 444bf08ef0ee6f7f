"""Issue 23 #11 and #20 in the Fine-tune panel: closing it mid-run, tooltips, empty paths, CPU threads."""

from __future__ import annotations

import numpy as np
import pytest
from magicgui.widgets import CheckBox, ComboBox, FileEdit, LineEdit, PushButton, SpinBox
from napari.utils.notifications import notification_manager
from qtpy.QtCore import QThreadPool
from tests.finetune_panel import (
    WAIT_MS,
    choose_example,
    choose_start,
    click_train,
    set_settings,
    small_run,
    train_and_wait,
)

from napari_spotdetect import load_model
from napari_spotdetect.core.weights.native import save_model
from napari_spotdetect.widgets.model_registry import registry_for


def _ready(viewer, tune, tiny_model, tmp_path, epochs, steps):
    viewer.open_sample("napari-spotdetect", "smfish_2d")
    choose_example(tune, viewer.layers["smFISH (synthetic)"], viewer.layers["true spots"])
    save_model(tiny_model, tmp_path / "start.pt")
    choose_start(tune, "file", tmp_path / "start.pt")
    small_run(tune, tmp_path / "models", epochs=epochs, steps=steps)
    assert tune.train_button.enabled, tune.status.value


@pytest.mark.slow
def test_closing_the_panel_mid_run_stops_training_and_leaves_the_best_model_file(finetune_widget, qtbot,
                                                                                tiny_model, tmp_path):
    viewer, _detect, tune = finetune_widget
    _ready(viewer, tune, tiny_model, tmp_path, epochs=40, steps=3)
    click_train(tune)
    qtbot.waitUntil(lambda: len(tune.plot.val_f1) >= 2, timeout=WAIT_MS)  # the first epoch is validated
    viewer.window.remove_dock_widget(tune.native)  # what the dock's x does
    QThreadPool.globalInstance().waitForDone(WAIT_MS)
    qtbot.wait(50)
    model_file = tmp_path / "models" / "tuned.pt"
    assert model_file.exists(), sorted(p.name for p in (tmp_path / "models").rglob("*"))
    card = load_model(model_file, device="cpu").info.card
    assert card["epoch"] < 40
    # the user is told that it stopped, and where the best epoch is (the panel that would say it is gone)
    said = [str(n.message) for n in notification_manager.records]
    assert any("stopped when its panel was closed" in m and str(model_file) in m for m in said), said
    assert "tuned" in {e.model.info.name for e in registry_for(viewer).models.values()}  # offered in 'Detect spots'


def test_every_control_a_user_clicks_has_a_tooltip(finetune_widget):
    _viewer, _detect, tune = finetune_widget
    clickable = (CheckBox, ComboBox, FileEdit, LineEdit, PushButton, SpinBox)
    seen, missing = [], []

    def walk(container):
        for w in container:
            if isinstance(w, clickable):
                seen.append(w)
                if not (w.tooltip or "").strip():
                    missing.append(w.label or getattr(w, "text", "") or type(w).__name__)
            elif hasattr(w, "__iter__"):
                walk(w)

    walk(tune.body)
    assert len(seen) > 15 and not missing, missing
    assert tune.examples.source.label == "Learn from" and tune.settings.advanced.text == "More settings"


def test_an_emptied_save_folder_or_model_file_is_refused(finetune_widget, tmp_path):
    viewer, _detect, tune = finetune_widget
    viewer.add_image(np.zeros((64, 64), np.float32), name="plane")
    viewer.add_points(np.array([[10.0, 10]]), name="spots")
    choose_example(tune, viewer.layers["plane"], viewer.layers["spots"])
    set_settings(tune, save_in=tmp_path, model_name="m2")
    assert tune.train_button.enabled, tune.status.value
    tune.settings.save_in.line_edit.native.setText("")  # the user clears the field
    tune.settings.save_in.line_edit.native.editingFinished.emit()
    assert not tune.train_button.enabled and "folder to save" in tune.status.value
    tune.train_button.native.click()
    assert not tune.running and not list(tmp_path.glob("*.pt"))
    set_settings(tune, save_in=tmp_path)
    choose_start(tune, "file", tmp_path / "start.pt")
    tune.settings.start_file.line_edit.native.setText("")
    tune.settings.start_file.line_edit.native.editingFinished.emit()
    assert not tune.train_button.enabled and "model file" in tune.status.value


@pytest.mark.slow
def test_the_cpu_threads_setting_is_what_training_uses(finetune_widget, qtbot, tiny_model, tmp_path, monkeypatch):
    import torch

    from napari_spotdetect.core.training import finetuning

    viewer, _detect, tune = finetune_widget
    threads = tune.settings.threads
    assert "idle" in threads.label and "idle" in threads.tooltip
    seen = []
    real = finetuning.iter_finetune

    def spy(*a, **kw):  # runs in the training thread: the threads torch trains with there
        seen.append(torch.get_num_threads())
        return (yield from real(*a, **kw))

    monkeypatch.setattr(finetuning, "iter_finetune", spy)
    _ready(viewer, tune, tiny_model, tmp_path, epochs=1, steps=1)
    want = min(2, threads.max)
    tune.settings.advanced.native.click()
    threads.native.setValue(want)  # the spin box, as a user sets it
    train_and_wait(tune, qtbot)
    assert seen == [want]


def test_an_emptied_export_to_field_is_refused_not_written_to_the_working_folder(make_napari_viewer, tmp_path,
                                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.float32), name="img")
    viewer.add_points(np.array([[10.0, 10.0], [20.0, 5.0]]), name="spots")
    _dock, measure = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Measure and count spots")
    measure._out.line_edit.native.setText("out/table")
    measure._out.line_edit.native.setText("")  # the user empties the field
    measure._out.line_edit.native.editingFinished.emit()
    measure._export_pts.native.click()
    assert "Choose a file to export to" in measure.status
    assert list(tmp_path.iterdir()) == []  # nothing written where napari was started


def test_nothing_is_cut_off_at_the_docks_right_edge(make_napari_viewer, qtbot):
    """The panel scrolls only vertically: its dock must be as wide as the widest row of controls needs (the example
    row with its ✕ was cut off by a few pixels)."""
    from qtpy.QtWidgets import QScrollArea

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1400, 950)
    viewer.open_sample("napari-spotdetect", "smfish_2d")
    _dock, tune = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Fine-tune on my spots")
    tune.settings.advanced.native.click()
    qtbot.wait(300)  # the dock takes its width
    scroll = tune.native.findChild(QScrollArea)
    assert scroll.viewport().width() >= tune.body.native.minimumSizeHint().width()
