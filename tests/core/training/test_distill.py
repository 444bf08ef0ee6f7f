"""Distillation: a student network taught a teacher's maps as well as the annotations (core/training/distill.py)."""

import numpy as np
import pytest
import torch

from napari_spotdetect.core.errors import SpotDetectError
from napari_spotdetect.core.models.base import ModelInfo
from napari_spotdetect.core.models.piscis import PiscisModel
from napari_spotdetect.core.models.piscis_net import PiscisConfig, PiscisNet
from napari_spotdetect.core.training.distill import Teacher
from napari_spotdetect.core.training.synthetic import synthetic_image
from napari_spotdetect.core.training.train import TrainConfig, Trainer
from napari_spotdetect.core.weights.native import save_model

TINY = PiscisConfig(widths=(8, 16, 32, 64), depths=(1, 1, 1, 1))


def _model(seed: int, adjustment: str = "standardize") -> PiscisModel:
    torch.manual_seed(seed)
    return PiscisModel(PiscisNet(TINY), ModelInfo(name="teacher", arch="piscis"), adjustment=adjustment,
                       tile_size=(64, 64), default_threshold=0.5, device="cpu")


def _data(n=3):
    return [synthetic_image((64, 64), n_spots=8, seed=i, min_distance=6) for i in range(n)]


def test_the_teachers_own_maps_cost_nothing_and_others_do():
    teacher = Teacher(_model(0), "standardize")
    x = torch.randn(2, 1, 32, 32)
    pooled, deltas = teacher.net(x)
    same, parts = teacher.loss(x, pooled, deltas)
    assert float(same) == pytest.approx(0.0, abs=1e-4)
    other_pooled, other_deltas = _model(1).net.eval()(x)
    differ, parts = teacher.loss(x, other_pooled.detach(), other_deltas.detach())
    assert float(differ) > 0.05 and parts["distill_kl"] > 0 and parts["distill_l2"] > 0


def test_a_taught_student_ends_closer_to_its_teacher(tmp_path):
    teacher_file = save_model(_model(3), tmp_path / "teacher.pt")
    teacher = Teacher(_model(3), "standardize")

    def distance_after(cfg):
        tr = Trainer(TINY, _data(), None, cfg)
        rng = np.random.default_rng(0)
        for i in range(30):
            tr._step(rng, 1, i, i / 30)
        x = torch.from_numpy(np.stack([tr.train[i][0][:32, :32] for i in range(3)])[:, None])
        tr.net.eval()
        with torch.no_grad():
            pooled, deltas = tr.net(x)
            return float(teacher.loss(x, pooled, deltas)[0])

    base = dict(epochs=1, steps_per_epoch=30, batch_size=2, crop=32, tile_size=64, lr=3e-3, optimizer="adam")
    alone = distance_after(TrainConfig(**base))
    taught = distance_after(TrainConfig(**base, teacher=str(teacher_file), distill_weight=2.0))
    assert taught < 0.7 * alone


def test_a_teacher_that_sees_other_images_is_refused(tmp_path):
    teacher_file = save_model(_model(0, adjustment="percentile"), tmp_path / "teacher.pt")
    cfg = TrainConfig(epochs=1, steps_per_epoch=1, batch_size=2, crop=32, tile_size=64, teacher=str(teacher_file))
    with pytest.raises(SpotDetectError, match="normalises its input by 'percentile'.*--normalization percentile"):
        Trainer(TINY, _data(1), None, cfg)
