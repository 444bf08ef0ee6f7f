"""Other normalisation percentiles for percentile-normalised models (the detect panel's controls)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_spotdetect import detect
from napari_spotdetect.core.errors import SpotDetectError
from napari_spotdetect.core.models.base import ModelInfo
from napari_spotdetect.core.models.piscis import PERCENTILES, PiscisModel
from napari_spotdetect.core.models.piscis_net import PiscisConfig, PiscisNet
from napari_spotdetect.core.training.synthetic import synthetic_image


def _model(adjustment):
    torch.manual_seed(0)
    net = PiscisNet(PiscisConfig(widths=(8, 16, 32, 64), depths=(1, 1, 1, 1)))
    return PiscisModel(net, ModelInfo(name="tiny", arch="piscis"), adjustment=adjustment, device="cpu")


def test_other_percentiles_share_the_network_and_change_the_input():
    model = _model("percentile")
    other = model.with_percentiles(10.0, 99.99)
    assert other.net is model.net and model.percentiles == PERCENTILES and other.percentiles == (10.0, 99.99)
    img, _ = synthetic_image((64, 64), n_spots=8, seed=1)
    lo_hi = model.plane_statistics(img[None]), other.plane_statistics(img[None])
    assert not np.allclose(*lo_hi)
    a = detect(img, model, keep_maps=False).candidates["score"].to_numpy()
    b = detect(img, other, keep_maps=False).candidates["score"].to_numpy()
    assert len(a) != len(b) or not np.allclose(a, b)


def test_percentiles_are_refused_where_they_mean_nothing():
    with pytest.raises(SpotDetectError, match="standardize"):
        _model("standardize").with_percentiles(1.0, 99.0)
    with pytest.raises(SpotDetectError, match="low < high"):
        _model("percentile").with_percentiles(99.0, 1.0)
