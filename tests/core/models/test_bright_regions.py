"""A bright region does not set the brightness scale of the plane it is in (core/models/bright_regions.py)."""

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from napari_spotdetect._sample_data import smfish_2d
from napari_spotdetect.core.detection.detect import detect
from napari_spotdetect.core.groundtruth.metrics import match_spots
from napari_spotdetect.core.models.piscis import percentile_limits
from napari_spotdetect.core.training.synthetic import synthetic_dataset, with_bright_patch

REAL = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "real"


def outside(yx: np.ndarray, mask: np.ndarray) -> np.ndarray:
    rc = np.clip(np.round(yx).astype(int), 0, np.array(mask.shape) - 1)
    return yx[~mask[rc[:, 0], rc[:, 1]]]


def _found_outside(model, image, truth, mask) -> float:
    return match_spots(outside(detect(image, model).spots[["y", "x"]].to_numpy(), mask), outside(truth, mask), 3.0).f1


def test_a_bright_patch_does_not_cost_the_spots_elsewhere(default_model):
    """Before, the patch's pixels set the 99.8th percentile: ordinary spots looked 3x dimmer than any spot the
    model trained on and some of those outside the patch were missed (on real images most of them:
    ``benchmarks/bench_bright_region.py``)."""
    img, truth = synthetic_dataset(1, "train", seed=1, shape=(384, 384))[0]
    patched, mask = with_bright_patch(img)
    plain_hi = percentile_limits(img)[0, 1]
    assert percentile_limits(patched, ignore_bright_regions=False)[0, 1] > 2 * plain_hi  # the trap is set
    assert percentile_limits(patched)[0, 1] == pytest.approx(plain_hi, rel=0.05)

    plain = _found_outside(default_model, img, truth, mask)
    assert _found_outside(default_model, patched, truth, mask) >= plain - 0.005

    rule_off = default_model.with_bright_region_rule(False)  # the same with the region rule off: what it prevents
    assert rule_off.normalization()["bright_regions"].endswith("(rule off)")
    assert _found_outside(rule_off, patched, truth, mask) < plain - 0.02
    assert default_model.ignore_bright_regions  # the copy changed, not the model it came from


def test_planes_whose_brightest_pixels_are_spots_keep_their_limits():
    """The sample (with its saturated spots), and every real image where the data is present."""
    (img, _, _), _ = smfish_2d()
    planes = [img]
    if REAL.exists():
        import tifffile

        for f in sorted(REAL.glob("*/images/*.tif"))[::3]:
            x = tifffile.imread(f)
            planes += list(x) if x.ndim == 3 else [x]
    for plane in planes:
        np.testing.assert_array_equal(percentile_limits(plane), percentile_limits(plane, ignore_bright_regions=False))


def test_a_lazy_plane_and_an_in_memory_one_leave_out_the_same_region():
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(1)
    img = rng.poisson(50, (2100, 2100)).astype(np.float32)
    yx = rng.integers(20, 2080, (3000, 2))
    img[yx[:, 0], yx[:, 1]] += 2000
    img = ndimage.gaussian_filter(img, 1.2)
    patched, _ = with_bright_patch(img)
    lazy = da.from_array(patched, chunks=512)
    np.testing.assert_array_equal(percentile_limits(lazy), percentile_limits(patched))
    assert percentile_limits(patched)[0, 1] < 0.6 * percentile_limits(patched, ignore_bright_regions=False)[0, 1]
