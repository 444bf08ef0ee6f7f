"""A trained epoch replaces the starting model only if it also should on the whole image
(core/groundtruth/calibration.py ``model_carries_over``, core/training/epoch_judge.py ``holds_on_whole_images``):
a held-out strip of a few spots can favour weights that place far more candidates on the rest of the image than
it holds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from napari_spotdetect.core.groundtruth.calibration import model_carries_over, pooled_f1, spots_in_images
from napari_spotdetect.core.training import finetuning
from napari_spotdetect.core.training.synthetic import synthetic_image
from napari_spotdetect.core.training.train import Trainer

# the start in a strip: 3 of 6 spots found, 1 false; 90 candidates on an image 44x the strip's area
START = ([3.0, 1.0, 3.0], 90)


def test_the_start_counts_the_images_spots_from_its_precision_and_recall_in_the_regions():
    assert spots_in_images(*START) == pytest.approx(0.75 * 90 / 0.5)
    assert spots_in_images([0.0, 4.0, 5.0], 90, area_ratio=10.0) == 50.0  # none found: the regions' density


def test_weights_that_win_a_strip_but_flood_the_image_with_candidates_do_not_carry_over():
    # (bench_hitl --split train: a 5-click pia_spots fine-tune picked such an epoch, threshold 0.04: 0.72 -> 0.25)
    assert not model_carries_over(START, ([6.0, 1.0, 0.0], 522), 44.0)
    assert not model_carries_over(START, ([6.0, 1.0, 0.0], 522), 44.0, z=0.0)  # even at the point estimates
    assert model_carries_over(START, ([6.0, 1.0, 0.0], 150), 44.0)  # the same strip, a plausible count


def test_where_the_regions_are_the_whole_images_the_check_is_the_f1_there_or_stricter():
    rng = np.random.default_rng(0)
    stricter = 0
    for _ in range(300):
        truth = int(rng.integers(5, 60))
        tp_s, tp_n = rng.integers(1, truth + 1, 2)
        fp_s, fp_n = rng.integers(0, 40, 2)
        s = [float(tp_s), float(fp_s), float(truth - tp_s)]
        n = [float(tp_n), float(fp_n), float(truth - tp_n)]
        f1_s, f1_n = pooled_f1(np.array([s]).T)[0], pooled_f1(np.array([n]).T)[0]
        if abs(f1_n - f1_s) > 1e-9:
            assert model_carries_over((s, tp_s + fp_s), (n, tp_n + fp_n), z=0.0) == (f1_n > f1_s)
            bounded = model_carries_over((s, tp_s + fp_s), (n, tp_n + fp_n))
            assert not bounded or f1_n > f1_s  # the bounds only ever keep the start
            stricter += (f1_n > f1_s) and not bounded
    assert stricter > 0


def _val(counts, k, folds):
    tp, fp, fn = counts
    f1 = 2 * tp / (2 * tp + fp + fn)
    return {"precision": tp / (tp + fp), "recall": tp / (tp + fn), "f1": f1, "f1_integral": f1, "threshold": 0.3,
            "f1_at_0_5": f1, "selection": f1, "folds": folds, "counts": list(map(float, counts)),
            "image_candidates": k}


@pytest.mark.parametrize("candidates, replaced", [(522, False), (150, True)])
def test_the_trainer_keeps_the_start_when_a_trained_epoch_would_not_carry_over(tiny_piscis, tmp_path, candidates,
                                                                               replaced):
    """The trainer's own choice of the best epoch, with the validation numbers of the case above."""
    img, pts = synthetic_image((96, 96), n_spots=20, seed=1)
    strip = (0, 0, 96, 48)
    cfg = dataclasses.replace(finetuning.finetune_config(epochs=1, steps_per_epoch=1, batch_size=1, crop=64),
                              ema=None)
    trainer = Trainer(tiny_piscis, [(img, pts, (48, 0, 96, 96))], [(img, pts, strip)], cfg, out_dir=tmp_path,
                      name="ft")
    # the strip's five folds (tp, fp, fn): the trained weights find every spot, the start half of them
    start = [[1.0, 0.0, 1.0], [1.0, 0.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    trained = [[2.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    trainer.consider_start(_val([3, 1, 3], 90, start))
    trainer.validate_epoch = lambda should_stop=None: _val([6, 1, 0], candidates, trained)
    res = trainer.fit()
    assert (trainer.best["epoch"] == 1) is replaced
    said = finetuning.FinetuneResult(res.model, None, False, res.history, None, kept_start=not replaced).verdict()
    if replaced:
        assert "refused_on_whole_image" not in res.history[-1] and "not taken" not in said
    else:  # the user is told why the strip's winner was not taken, with the numbers
        assert res.history[-1]["refused_on_whole_image"] == {"candidates": 522, "start_candidates": 90,
                                                              "spots_estimated": 135.0}
        assert "No epoch beat the starting model" in said
        assert "Epoch 1 scored better on the held-out strip but was not taken" in said
        assert "would place 522 spots where the starting model places 90 and the annotation suggests about 135" in said
