"""The threshold slider and "Model's own values" follow the selected layer's model, not the last model run."""

from __future__ import annotations

import numpy as np
import torch

from napari_spotdetect import layer_keys as K
from napari_spotdetect.core.models.base import ModelInfo
from napari_spotdetect.core.models.piscis import PiscisModel
from napari_spotdetect.core.models.piscis_net import PiscisConfig, PiscisNet
from napari_spotdetect.core.training.synthetic import synthetic_image


def _model(name: str, threshold_range, default: float) -> PiscisModel:
    torch.manual_seed(0)
    net = PiscisNet(PiscisConfig(widths=(8, 16, 32, 64), depths=(1, 1, 1, 1)))
    model = PiscisModel(net, ModelInfo(name=name, arch="piscis", source="<test>"), device="cpu")
    model.threshold_range, model.default_threshold = tuple(threshold_range), default
    return model


def test_selecting_an_older_layer_gives_its_models_range_and_values(detect_widget, run_and_wait):
    viewer, detect = detect_widget
    img, _ = synthetic_image((96, 96), n_spots=15, seed=5)
    viewer.add_image(img.astype(np.float32), name="cells")
    detect.set_model(_model("older", (0.0, 1.0), 0.6))
    run_and_wait(detect)
    detect.set_model(_model("newer", (0.0, 4.0), 2.5))
    run_and_wait(detect)
    older, newer = ([lay for lay in viewer.layers if K.is_detection(lay) and name in lay.name][0]
                    for name in ("older", "newer"))
    assert detect._threshold.max == 4.0

    viewer.layers.selection.active = older  # the user clicks the older layer in the layer list
    assert detect._threshold.max == 1.0  # its model's range, not the last model's
    detect._threshold.value = 0.9
    detect.apply_threshold()
    detect._tuned.native.click()  # "Model's own values"
    assert detect._threshold.value == 0.6 and older.metadata[K.PROVENANCE]["threshold"] == 0.6

    viewer.layers.selection.active = newer
    assert detect._threshold.max == 4.0 and detect._threshold.value == 2.5
