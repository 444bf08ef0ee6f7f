"""Calibration's whole-image check (core/groundtruth/calibration.py, ``carries_over``): a threshold move that a
handful of clicks supports must also pay on the image's own, unannotated candidates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_spotdetect.core.groundtruth.calibration import calibrate, carries_over

REAL = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "real"
BOX = (0, 0, 40, 40)


def _image(n_spots: int, n_faint_false: int, region_faint_true: int, seed: int = 0):
    """Candidates of a 200x200 image: ``n_spots`` found spots at 0.9 spread over it, ``n_faint_false`` faint
    false candidates (0.05) outside the region, and in the region ``region_faint_true`` faint candidates that
    are spots, the spots the model misses at its threshold. Returns (candidates, truth in the region)."""
    rng = np.random.default_rng(seed)
    spots = np.r_[rng.uniform(2, 38, (5, 2)), rng.uniform(45, 195, (n_spots - 5, 2))]
    faint_true = rng.uniform(2, 38, (region_faint_true, 2))
    faint_false = rng.uniform(45, 195, (n_faint_false, 2))
    yx = np.r_[spots, faint_true, faint_false]
    s = np.r_[np.full(len(spots), 0.9), np.full(region_faint_true, 0.05), np.full(n_faint_false, 0.05)]
    truth = np.r_[spots[:5], faint_true]
    return (yx, s), truth


def test_a_move_down_on_five_faint_clicks_does_not_carry_to_an_image_full_of_faint_candidates():
    cands, truth = _image(n_spots=60, n_faint_false=400, region_faint_true=5)
    assert not carries_over([cands], [truth], [BOX], 0.34, 0.01, 3.0, [cands], area_ratio=25.0)


def test_a_move_down_carries_when_the_image_has_few_faint_candidates_left():
    cands, truth = _image(n_spots=60, n_faint_false=10, region_faint_true=12)
    assert carries_over([cands], [truth], [BOX], 0.34, 0.01, 3.0, [cands], area_ratio=25.0)


def test_a_move_up_that_drops_true_spots_does_not_carry():
    cands, truth = _image(n_spots=60, n_faint_false=0, region_faint_true=0)
    # in the region every candidate at 0.9 is a spot: dropping them (threshold 0.95) cannot pay
    assert not carries_over([cands], [truth], [BOX], 0.34, 0.95, 3.0, [cands], area_ratio=25.0)


@pytest.mark.skipif(not REAL.exists(), reason="needs ../shared/data/real (the project's real images)")
def test_five_clicks_on_a_real_image_no_longer_move_the_threshold_to_its_floor():
    """Found by benchmarks/calibration_rule.py on a train image: 5 clicks whose faint candidates were all spots
    moved the threshold 0.34 -> 0.01, and F1 integral on the other half fell 0.70 -> 0.04."""
    import tifffile

    from napari_spotdetect.core.detection.detect import detect
    from napari_spotdetect.core.models.zoo import bundled_path, load_model

    if not bundled_path("default").exists():
        pytest.skip("the bundled default model is not in this checkout")
    f = next((REAL / "pia_spots" / "images").glob("im016_*.tif"))
    img = tifffile.imread(f).astype(np.float32)
    spots = np.loadtxt(REAL / "pia_spots" / "spots" / f"{f.stem}.csv", delimiter=",", skiprows=1)
    box = (19, 247, 68, 296)
    model = load_model("default", device="cpu")
    det = detect(img, model, threshold=0.005, keep_maps=False)
    from napari_spotdetect.core.groundtruth.regions import inside

    mine = spots[inside(spots, box)]
    assert len(mine) == 5
    cal = calibrate(model, [(img, mine, box)], radius=3.0, detections=[det])
    assert cal.threshold == model.default_threshold
