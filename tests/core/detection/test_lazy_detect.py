"""Detection at scale: compact candidates instead of maps, exact stack re-thresholding, lazy zarr/dask input."""

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage

from napari_spotdetect import detect
from napari_spotdetect.core.errors import SpotDetectError
from napari_spotdetect.core.models.ops import stack_components, voxel_components
from napari_spotdetect.core.training.synthetic import synthetic_image

COLS = ["y", "x", "score", "intensity"]


@pytest.fixture(scope="module")
def image():
    return synthetic_image((150, 170), n_spots=40, seed=2)[0]


@pytest.fixture(scope="module")
def stack():
    planes = [synthetic_image((96, 80), n_spots=25, seed=s)[0] for s in (3, 4, 5)]
    return np.stack(planes + planes[::-1])  # (z=6, y, x)


def _dense_stack_spots(det, threshold):
    """Piscis's stack rule applied to the full stitched maps: what re-thresholding gave when maps were kept."""
    score, dy, dx = (det.maps[n] for n in ("labels", "dy", "dx"))
    vox, peak = stack_components(score, threshold)
    z, r, c = vox.T
    y, x = r + dy[z, r, c].astype(np.float64), c + dx[z, r, c].astype(np.float64)
    h, w = score.shape[-2:]
    keep = (y > -0.5) & (y < h - 0.5) & (x > -0.5) & (x < w - 0.5)
    return np.stack([z[keep], y[keep], x[keep], peak[keep]], 1)


def test_maps_are_not_kept_unless_asked(tiny_piscis, image):
    det = detect(image, tiny_piscis, threshold=0.05)
    assert det.maps == {} and len(det.spots) == det.count(0.05)


def test_stack_rethreshold_matches_full_maps(tiny_piscis, stack):
    det = detect(stack, tiny_piscis, axes="zyx", threshold=0.05, keep_maps=True)
    for t in (0.05, 0.2, 0.4, 0.7):
        got = det.rethreshold(t)
        ref = _dense_stack_spots(det, t)
        assert len(got) == len(ref), t
        np.testing.assert_allclose(got[["z", "y", "x", "score"]].to_numpy(), ref, atol=1e-6)
    assert len(det.candidates) < stack.size / 4  # compact: voxels near spots, not the volume


def test_stack_candidates_are_the_same_with_and_without_maps(tiny_piscis, stack):
    a = detect(stack, tiny_piscis, axes="zyx", threshold=0.05, keep_maps=True).rethreshold(0.3)
    b = detect(stack, tiny_piscis, axes="zyx", threshold=0.05).rethreshold(0.3)
    np.testing.assert_array_equal(a[["z", "y", "x", "score", "intensity"]].to_numpy(),
                                  b[["z", "y", "x", "score", "intensity"]].to_numpy())


def test_stack_threshold_below_the_floor_is_refused(tiny_piscis, stack):
    det = detect(stack, tiny_piscis, axes="zyx", threshold=0.2)
    with pytest.raises(SpotDetectError, match="lowest one"):
        det.rethreshold(0.001)


def test_voxel_components_are_those_of_ndimage_label():
    rng = np.random.default_rng(1)
    mask = ndimage.binary_opening(rng.random((7, 40, 40)) > 0.55)
    lab_ref, n_ref = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    vox = np.argwhere(mask)[rng.permutation(int(mask.sum()))]  # any order
    lab, n = voxel_components(vox, mask.shape)
    assert n == n_ref
    np.testing.assert_array_equal(lab + 1, lab_ref[tuple(vox.T)])


def test_float16_and_zarr_maps(tiny_piscis, image, tmp_path):
    ref = detect(image, tiny_piscis, threshold=0.05, keep_maps=True)
    half = detect(image, tiny_piscis, threshold=0.05, keep_maps="float16")
    assert half.maps["labels"].dtype == np.float16
    np.testing.assert_allclose(half.maps["labels"], ref.maps["labels"], atol=2e-3)
    stored = detect(image, tiny_piscis, threshold=0.05, keep_maps=str(tmp_path / "maps.zarr"))
    import zarr

    group = zarr.open_group(str(tmp_path / "maps.zarr"), mode="r")
    for name in ("labels", "dy", "dx"):
        np.testing.assert_array_equal(group[name][:], ref.maps[name])
    pd_cols = ["y", "x", "score"]
    np.testing.assert_array_equal(stored.spots[pd_cols].to_numpy(), ref.spots[pd_cols].to_numpy())


class CountingArray:
    """A lazy array that records the pixels each read takes (like a zarr or HDF5 array would)."""

    def __init__(self, data):
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.reads = []

    def __getitem__(self, key):
        out = self.data[key]
        self.reads.append(np.asarray(out).shape)
        return out


def test_zarr_store_gives_the_same_spots_as_numpy(tiny_piscis, image, tmp_path):
    import zarr

    z = zarr.open_array(str(tmp_path / "img.zarr"), mode="w", shape=image.shape, chunks=(40, 40),
                        dtype=image.dtype)
    z[:] = image
    a = detect(image, tiny_piscis, threshold=0.05).spots
    b = detect(zarr.open_array(str(tmp_path / "img.zarr"), mode="r"), tiny_piscis, threshold=0.05).spots
    np.testing.assert_array_equal(a[COLS].to_numpy(), b[COLS].to_numpy())


@pytest.mark.slow
def test_lazy_input_is_read_one_band_of_tiles_at_a_time(tiny_piscis, image):
    big = np.tile(image, (4, 2))  # 600 x 340: many rows of 64-px tiles
    src = CountingArray(big)
    spots = detect(src, tiny_piscis, threshold=0.05).spots
    ref = detect(big, tiny_piscis, threshold=0.05).spots
    np.testing.assert_array_equal(spots[COLS].to_numpy(), ref[COLS].to_numpy())
    rows = [s[0] for s in src.reads if len(s) == 2]
    assert rows and max(rows) < big.shape[0] / 2  # never the whole plane: bands of rows
    assert sum(r * s[1] for r, s in zip(rows, src.reads)) <= big.size  # each pixel read once


def test_lazy_stack_with_time_axis(tiny_piscis, stack):
    tz = np.stack([stack, stack[::-1]])  # (t, z, y, x)
    a = detect(tz, tiny_piscis, threshold=0.05, axes="tzyx").rethreshold(0.3)
    b = detect(da.from_array(tz, chunks=(1, 2, 50, 50)), tiny_piscis, threshold=0.05, axes="tzyx").rethreshold(0.3)
    assert len(a) and set(a.t) == {0, 1}
    np.testing.assert_array_equal(a[["t", "z"] + COLS].to_numpy(), b[["t", "z"] + COLS].to_numpy())


def test_nan_in_a_lazy_image_is_reported(tiny_piscis, image):
    bad = image.astype(np.float32).copy()
    bad[100, 10] = np.nan
    with pytest.raises(SpotDetectError, match="NaN"):
        detect(da.from_array(bad, chunks=64), tiny_piscis)


@pytest.mark.slow
def test_a_contrast_floor_on_lazy_input_reads_bands_too(tiny_piscis, image, monkeypatch):
    from napari_spotdetect.core.detection import contrast

    monkeypatch.setattr(contrast, "BAND_ROWS", 128)
    big = np.tile(image, (4, 2))
    src = CountingArray(big)
    spots = detect(src, tiny_piscis, threshold=0.05, contrast_floor=0.3).spots
    ref = detect(big, tiny_piscis, threshold=0.05, contrast_floor=0.3).spots
    np.testing.assert_allclose(spots[COLS + ["contrast"]].to_numpy(), ref[COLS + ["contrast"]].to_numpy())
    rows = [s[0] for s in src.reads if len(s) == 2]
    assert max(rows) < big.shape[0] / 2  # the contrast pass reads bands of rows as well, never the whole plane
