"""A model fine-tuned in the folder loop is offered again after a restart (the folder remembers it)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from napari.utils.key_bindings import coerce_keybinding
from tests.finetune_panel import choose_start, small_run, train_and_wait

from napari_spotdetect import layer_keys as K
from napari_spotdetect.core.training.synthetic import synthetic_image
from napari_spotdetect.core.weights.native import save_model
from napari_spotdetect.widgets.folder_widget import DONE_KEY

# waits end as soon as their condition holds; a loaded 2-core machine may need minutes, never a failure
WAIT_MS = 600_000


def _panels(viewer, model):
    _dock, panels = viewer.window.add_plugin_dock_widget("napari-spotdetect", "All panels (tabs)")
    panels.detect.set_model(model)
    return panels


@pytest.mark.slow
def test_restart_offers_the_model_made_in_this_folder(make_napari_viewer, tiny_model, tmp_path, qtbot):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        img, _ = synthetic_image((96, 96), n_spots=12, seed=50 + i)
        tifffile.imwrite(folder / f"cell{i}.tif", img.astype(np.float32))
    viewer = make_napari_viewer()
    panels = _panels(viewer, tiny_model)
    panels.folder.set_folder(folder)
    qtbot.waitUntil(lambda: panels.folder.truth_layer() is not None, timeout=WAIT_MS)
    viewer.keymap[coerce_keybinding(DONE_KEY)](viewer)  # cell0 done
    panels.folder.train_on_done()
    tune = panels.finetune
    save_model(tiny_model, tmp_path / "start.pt")
    choose_start(tune, "file", tmp_path / "start.pt")
    small_run(tune, tmp_path / "models", epochs=1, steps=1, batch=1)
    train_and_wait(tune, qtbot)
    viewer.close()

    viewer2 = make_napari_viewer()  # a new napari session on the same folder
    panels2 = _panels(viewer2, tiny_model)
    panels2.folder.set_auto_detect(False)
    panels2.folder.set_folder(folder)
    offered = [k for k in panels2.detect._choices.model_kind.choices if str(k).startswith("session:")]
    assert len(offered) == 1
    panels2.detect._choices.model_kind.value = offered[0]
    panels2.detect.run()
    qtbot.waitUntil(lambda: not panels2.detect.running, timeout=WAIT_MS)
    *kept, spots = [lay for lay in viewer2.layers if K.is_detection(lay)]  # after cell1's kept detections
    assert spots.metadata[K.PROVENANCE]["model"] == "tuned"
    assert [lay.metadata[K.PROVENANCE]["model"] for lay in kept] == ["tiny-random"]
