"""Fine-tuning the published DeepSpot enhancer through the same Trainer as Piscis, and our file format for it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_spotdetect.core.detection.detect import detect
from napari_spotdetect.core.errors import SpotDetectError
from napari_spotdetect.core.models.deepspot import DeepSpotModel
from napari_spotdetect.core.models.zoo import load_model
from napari_spotdetect.core.training.losses import deepspot_loss
from napari_spotdetect.core.training.synthetic import synthetic_dataset
from napari_spotdetect.core.training.train import TrainConfig, Trainer
from napari_spotdetect.core.training.trainable import DeepSpotRecipe


@pytest.fixture(scope="module")
def published(mhybrid):
    return load_model(mhybrid, device="cpu")


def _state(model):
    return {k: v.detach().clone() for k, v in model.net.state_dict().items()}


def _training_loss(recipe, net, img, pts):
    """BCE + max-MSE of ``net`` on the whole (max-normalised) training image."""
    x = recipe.prepare(img)
    target = torch.from_numpy(recipe.targets(x, pts)["enhanced"])[None]
    with torch.no_grad():
        return float(deepspot_loss(net(torch.from_numpy(x)[None, None])[:, 0], target))


@pytest.mark.slow
def test_finetuning_deepspot_learns_saves_and_reloads(published, tmp_path):
    before = _state(published)
    img, pts = synthetic_dataset(1, "dense_textured", seed=21, shape=(96, 96))[0]
    cfg = TrainConfig.finetune(lr=1e-4, epochs=2, steps_per_epoch=6, crop=64, batch_size=2)
    tr = Trainer(published, [(img, pts)], None, cfg, out_dir=tmp_path, name="ds")
    assert isinstance(tr.recipe, DeepSpotRecipe)
    start_loss = _training_loss(tr.recipe, tr.recipe.fresh_net().eval(), img, pts)
    res = tr.fit()
    # the model in use is untouched; the published BatchNorm statistics are kept (frozen)
    assert all(torch.equal(v, before[k]) for k, v in published.net.state_dict().items())
    stats = {k: v for k, v in res.model.net.state_dict().items() if "running" in k}
    assert stats and all(torch.equal(v, before[k]) for k, v in stats.items())
    assert _training_loss(tr.recipe, res.model.net.eval(), img, pts) < start_loss
    # the best checkpoint is our own file, holds a DeepSpot network and detects exactly like the result
    loaded = load_model(res.best_path, device="cpu")
    assert isinstance(loaded, DeepSpotModel) and loaded.info.arch == "deepspot"
    assert loaded.info.card["mode"] == "finetune" and loaded.info.card["base_model"] == published.info.name
    assert loaded.default_threshold == pytest.approx(res.model.default_threshold)
    a = detect(img, res.model, keep_maps=True).maps["enhanced"]
    b = detect(img, loaded, keep_maps=True).maps["enhanced"]
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert not np.allclose(a, detect(img, published, keep_maps=True).maps["enhanced"], atol=1e-4)  # it did change


def test_deepspot_trains_with_its_own_loss_and_warns_of_a_high_rate(published):
    img, pts = synthetic_dataset(1, "dense_textured", seed=21, shape=(64, 64))[0]
    with pytest.raises(SpotDetectError, match="its own loss"):
        Trainer(published, [(img, pts)], None, TrainConfig.finetune(loss="dice"))
    start = next(Trainer(published, [(img, pts)], None, TrainConfig.finetune(lr=1e-3)).iter_fit())
    assert start.kind == "start" and "learning rate of 0.0001 or less" in start.advice
    assert start.advice in start.message
    start = next(Trainer(published, [(img, pts)], None, TrainConfig.finetune(lr=1e-4)).iter_fit())
    assert not start.advice and "learning rate" not in start.message
