"""Test-time augmentation: maps averaged over the 8 flips/transposes of each tile, each turned back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_spotdetect import detect
from napari_spotdetect.core.groundtruth.metrics import evaluate
from napari_spotdetect.core.models.base import ModelInfo, SpotModel, TileCandidates
from napari_spotdetect.core.training.synthetic import synthetic_image


class GradientModel(SpotModel):
    """Maps that turn with the image by construction: the image and its central differences (periodic)."""

    map_names = ("labels", "dy", "dx")
    score_map = "labels"
    vector_maps = ("dy", "dx")

    def __init__(self, shift: int = 0):
        self.shift = shift
        super().__init__(torch.nn.Identity(), ModelInfo(name="gradient", arch="test"), tile_size=(32, 32))

    def normalize_tiles(self, tiles):
        return tiles.astype(np.float32)

    def forward_maps(self, x):
        x = torch.roll(x, self.shift, dims=-1)  # shift > 0 breaks the symmetry on purpose
        dy = (torch.roll(x, -1, -2) - torch.roll(x, 1, -2)) / 2
        dx = (torch.roll(x, -1, -1) - torch.roll(x, 1, -1)) / 2
        return torch.cat([x, dy, dx], dim=1)

    def tile_candidates(self, maps, floor, min_distance=1):
        return TileCandidates(np.zeros((0, 2)), np.zeros(0))


@pytest.mark.parametrize("shape", [(2, 1, 32, 32), (2, 1, 32, 48)])
def test_turning_back_each_view_recovers_equivariant_maps(shape):
    m = GradientModel()
    x = torch.from_numpy(np.random.default_rng(0).normal(size=shape).astype(np.float32))
    plain, averaged = m.forward_maps(x), m.forward_maps_augmented(x)
    # were a flip's sign or a transpose's swap of dy/dx forgotten, the displacement maps would cancel or mix
    torch.testing.assert_close(averaged, plain, atol=1e-6, rtol=0)


def test_orientation_dependent_errors_average_out():
    m = GradientModel(shift=1)
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(1, 1, 32, 32)).astype(np.float32))
    truth = GradientModel().forward_maps(x)
    plain, averaged = m.forward_maps(x), m.forward_maps_augmented(x)
    assert (averaged - truth).abs().mean() < 0.8 * (plain - truth).abs().mean()


def test_augmented_maps_turn_with_the_image(tiny_piscis):
    img, _ = synthetic_image(tiny_piscis.tile_size, n_spots=40, seed=4)  # one unpadded tile: no edge effects
    plain = detect(img, tiny_piscis, 0.5, keep_maps=True)
    aug = detect(img, tiny_piscis, 0.5, augment=True, keep_maps=True)
    assert aug.provenance["test_time_augmentation"] is True and plain.provenance["test_time_augmentation"] is False
    assert not np.allclose(aug.maps["labels"], plain.maps["labels"])  # it averaged other views
    # a rotated image gives the same augmented maps, turned: the average is over the whole group
    rot = detect(np.ascontiguousarray(np.rot90(img)), tiny_piscis, 0.5, augment=True, keep_maps=True)
    np.testing.assert_allclose(np.rot90(aug.maps["labels"]), rot.maps["labels"], atol=1e-5)


@pytest.mark.slow
def test_the_default_model_finds_the_same_spots_with_augmentation():
    img, truth = synthetic_image((128, 128), n_spots=30, seed=8)
    plain = detect(img, "default").spots[["y", "x"]].to_numpy()
    aug = detect(img, "default", augment=True).spots[["y", "x"]].to_numpy()
    assert evaluate(aug, plain)["f1"] > 0.95
    assert evaluate(aug, truth)["f1"] >= evaluate(plain, truth)["f1"] - 0.02
