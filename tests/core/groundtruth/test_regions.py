"""Regions, calibration and suggestions in the engine: whole-image normalisation, outside unknown, the split
in space, the smoothed threshold choice, a stop during BatchNorm recalibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_spotdetect.core.errors import SpotDetectError
from napari_spotdetect.core.groundtruth.calibration import (
    GRID,
    MIN_BAND,
    band_size,
    cross_validated,
    fold_boxes,
    pick_threshold,
)
from napari_spotdetect.core.groundtruth.regions import boxes_from_shapes, check_box, inside, region_examples
from napari_spotdetect.core.groundtruth.suggest import suggest_region
from napari_spotdetect.core.training.examples import split_examples
from napari_spotdetect.core.training.finetuning import finetune_config
from napari_spotdetect.core.training.synthetic import synthetic_image
from napari_spotdetect.core.training.train import Trainer


def _bright_corner():
    img, pts = synthetic_image((128, 128), n_spots=30, amplitude=(150, 400), seed=3)
    yy, xx = np.mgrid[0:128, 0:128]
    return (img + 8000 * np.exp(-((yy - 20) ** 2 + (xx - 108) ** 2) / 200.0)).astype(np.float32), pts


def test_a_region_is_normalised_with_its_whole_image(tiny_piscis):
    from napari_spotdetect.core.models.piscis import PiscisModel

    img, pts = _bright_corner()
    model = PiscisModel(tiny_piscis.net, tiny_piscis.info, adjustment="percentile", tile_size=(64, 64))
    box = (64, 0, 128, 64)  # far from the bright corner
    tr = Trainer(model, region_examples(img, pts, [box]), None, finetune_config(crop=32, epochs=1))
    seen, spots = tr.train[0]
    whole = tr.recipe.prepare(img)
    np.testing.assert_allclose(seen, whole[64:128, 0:64])
    assert seen.max() < 0.5 * tr.recipe.prepare(img[64:128, 0:64]).max()  # the crop alone would look bright
    inside_box = pts[inside(pts, box)]
    np.testing.assert_allclose(spots, inside_box - [64, 0])  # spots moved into the region, none from outside


def test_validation_counts_only_inside_the_region(tiny_piscis):
    img, pts = synthetic_image((96, 96), n_spots=20, seed=2)
    box = (0, 0, 48, 96)
    tr = Trainer(tiny_piscis, region_examples(img, pts, [box]), None, finetune_config(crop=32, epochs=1))
    val = tr.validate(at=0.5)
    # the same scores as a detection scored against the spots of the box only
    from napari_spotdetect.core.detection.detect import detect
    from napari_spotdetect.core.groundtruth.metrics import evaluate

    sp = detect(img, tiny_piscis, threshold=0.5, keep_maps=False).spots[["y", "x"]].to_numpy()
    assert val["at"]["f1"] == pytest.approx(evaluate(sp[inside(sp, box)], pts[inside(pts, box)], 1.0)["f1"])


def test_a_single_example_is_split_in_space():
    img, pts = synthetic_image((64, 128), n_spots=20, seed=1)
    train, val = split_examples([(img, pts)], 0.25)
    (_, tp, tb), = train
    (_, vp, vb), = val
    assert tb == (0, 0, 64, 96) and vb == (0, 96, 64, 128)  # along the longer side, a quarter held out
    assert len(tp) + len(vp) == len(pts) and len(vp) > 0
    assert split_examples([(img, pts)], 0.0) == ([(img, pts)], None)  # 0 %: no hold-out at all


def test_boxes_are_checked_and_read_from_napari_rectangles():
    assert boxes_from_shapes([np.array([[10.2, 5.0], [10.2, 20.0], [30.0, 20.0], [30.0, 5.0]])]) == [(11, 5, 31, 21)]
    assert check_box((-5, -5, 500, 40), (100, 100)) == (0, 0, 100, 40)
    with pytest.raises(SpotDetectError, match="less than 2 x 2"):
        check_box((10, 10, 10, 50), (100, 100))


def test_the_threshold_is_chosen_on_a_plateau_not_a_spike():
    grid = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    f1 = np.array([0.5, 0.5, 0.95, 0.5, 0.8, 0.82, 0.8])  # a lucky spike at 0.3
    assert pick_threshold(grid, f1) == 0.6


def test_folds_are_strips_with_equal_shares_of_the_clicks_and_a_patch_gain_is_not_taken_for_a_rule():
    rng = np.random.default_rng(1)
    truth = np.c_[rng.uniform(0, 100, 40), rng.uniform(0, 30, 40)]
    box = (0, 0, 100, 30)
    folds = fold_boxes([truth], [box], [(100, 30)], 4)
    assert [f[0][1::2] for f in folds] == [(0, 30)] * 4  # strips across the longer side (y), whole width
    assert folds[0][0][0] == 0 and folds[-1][0][2] == 100
    shares = [int(inside(truth, f[0]).sum()) for f in folds]  # cuts are whole pixels: about 10 each
    assert sum(shares) == 40 and all(8 <= n <= 12 for n in shares), shares
    # the model finds every spot at 0.9, plus false ones at 0.3; one strip's spots score only 0.3 and come
    # with no false ones: in the region, 0.25 looks best, but on the other strips it only adds false spots
    ys = truth[:, 0]
    first = inside(truth, folds[0][0])
    fakes = np.c_[np.linspace(30, 95, 30), np.full(30, 15.0)]
    yx = np.r_[truth, fakes + 0.5 * rng.uniform(-1, 1, (30, 2))]
    scores = np.r_[np.where(first, 0.3, 0.9), np.full(30, 0.3)]
    far = np.min(np.hypot(*(fakes[:, None] - truth[None]).transpose(2, 0, 1)), axis=1) > 3
    yx, scores = np.r_[yx[:40], yx[40:][far]], np.r_[scores[:40], scores[40:][far]]
    cv = cross_validated([(yx, scores)], [truth], [box], [(100, 30)], GRID, 3.0, prefer=0.5, fixed=0.5)
    assert cv["folds"] == 5 and cv["f1"] <= cv["f1_fixed"] + 1e-9, cv  # chosen on the others, no gain
    assert band_size([(yx, scores)], [box], 0.5, 0.25) == int(((scores > 0.25) & (scores <= 0.5)).sum())
    assert ys.size == 40 and MIN_BAND >= 1


def test_the_suggestion_is_where_scores_sit_near_the_threshold_outside_the_regions():
    rng = np.random.default_rng(0)
    sure = rng.uniform(0, 200, (200, 2))
    undecided = rng.uniform([150, 150], [190, 190], (30, 2))
    yx = np.concatenate([sure, undecided])
    scores = np.concatenate([np.full(200, 0.999), np.full(30, 0.5)])
    box = suggest_region(yx, scores, 0.5, (200, 200), 48)
    assert box[0] <= 160 and box[2] >= 180 and box[1] <= 160 and box[3] >= 180
    other = suggest_region(yx, scores, 0.5, (200, 200), 48, exclude=[box])
    assert other[2] <= box[0] or other[3] <= box[1] or other[0] >= box[2] or other[1] >= box[3]


def test_stop_during_batchnorm_recalibration_ends_the_epoch_at_once(tiny_piscis):
    img, pts = synthetic_image((96, 96), n_spots=20, seed=2)
    cfg = finetune_config(crop=32, epochs=2, steps_per_epoch=2, batch_size=1)
    calls = [0]

    def stop():  # the checks: one per step, one after the steps, then the first in the recalibration
        calls[0] += 1
        return calls[0] >= cfg.steps_per_epoch + 2

    tr = Trainer(tiny_piscis, [(img, pts)], None, cfg, stop=stop)
    forwards = []
    tr.net.register_forward_hook(lambda *_: forwards.append(1))
    bns = [m for m in tr.net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    events = list(_drain(tr.iter_fit()))
    assert events[-1] == "stopped" and "epoch" not in events
    assert len(forwards) == 0  # not a single recalibration batch ran (training steps call heads(), not forward)
    kept = [m.running_var.clone() for m in bns]
    assert all(torch.isfinite(v).all() and (v > 0).all() for v in kept)  # statistics restored, not reset


def _drain(gen):
    for ev in gen:
        yield ev.kind
