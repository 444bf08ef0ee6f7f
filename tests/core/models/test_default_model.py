"""The bundled default model: loads, documents itself, detects well on its kind, ignores intensity scale."""

import numpy as np

from napari_spotdetect.core.detection.detect import detect
from napari_spotdetect.core.groundtruth.metrics import evaluate
from napari_spotdetect.core.models.zoo import bundled_path
from napari_spotdetect.core.training.synthetic import synthetic_dataset


def test_card_records_training_and_scores(default_model):
    card = default_model.info.card
    assert card["stages"][0]["from"] == "scratch" and card["training_data"]["kind"] == "train"  # no outside weights
    assert card["benchmark"]["x1"]["f1_integral"] > 0.5
    assert 0.05 <= default_model.default_threshold <= 0.99
    assert bundled_path("default").stat().st_size < 8e6


def test_detects_held_out_synthetic_spots_at_any_intensity_scale(default_model):
    img, gt = synthetic_dataset(1, "train", seed=999, shape=(256, 256))[0]
    ref = detect(img, default_model, keep_maps=False).spots[["y", "x"]].to_numpy()
    assert evaluate(ref, gt)["f1"] > 0.8
    for s in (0.2, 5.0):
        other = detect(img * s, default_model, keep_maps=False).spots[["y", "x"]].to_numpy()
        assert other.shape == ref.shape
        np.testing.assert_allclose(other, ref, atol=1e-3)
