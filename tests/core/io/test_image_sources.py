"""Opening images lazily and finding them on disk."""

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from napari_spotdetect.core.errors import SpotDetectError
from napari_spotdetect.core.io.image_sources import find_images, image_name, open_image


def test_ome_zarr_opens_the_full_resolution_level_with_its_axes(tmp_path):
    img = np.arange(2 * 3 * 40 * 50, dtype=np.uint16).reshape(2, 3, 40, 50)
    g = zarr.open_group(str(tmp_path / "s.ome.zarr"), mode="w")
    g.create_array("full", shape=img.shape, chunks=(1, 1, 20, 20), dtype=img.dtype)[:] = img
    g.create_array("half", shape=(2, 3, 20, 25), dtype=img.dtype)
    axes = [{"name": "c", "type": "channel"}, {"name": "z"}, {"name": "y"}, {"name": "x"}]
    datasets = [{"path": "full"}, {"path": "half"}]
    g.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": datasets}]}
    arr, ax = open_image(tmp_path / "s.ome.zarr")
    assert isinstance(arr, da.Array) and ax == "czyx" and arr.shape == img.shape
    np.testing.assert_array_equal(arr[1, 2].compute(), img[1, 2])


def test_tiff_and_npy_open_lazily(tmp_path):
    img = np.random.default_rng(0).integers(0, 4000, (300, 200), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "t.ome.tif", img, tile=(64, 64), ome=True)
    np.save(tmp_path / "n.npy", img)
    for name, axes in (("t.ome.tif", "yx"), ("n.npy", None)):  # an OME-TIFF says its axes; a .npy cannot
        arr, ax = open_image(tmp_path / name)
        assert isinstance(arr, da.Array) and ax == axes
        np.testing.assert_array_equal(arr[100:150, 30:90].compute(), img[100:150, 30:90])


def test_lazy_tiff_takes_its_axes_from_imagej_metadata(tmp_path):
    stack = np.random.default_rng(1).integers(0, 4000, (5, 64, 48), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "zstack.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    arr, ax = open_image(tmp_path / "zstack.tif")
    assert ax == "zyx" and arr.shape == stack.shape  # not a time series of 5 planes


def test_unreadable_and_ambiguous_stores_are_explained(tmp_path):
    (tmp_path / "bad.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(SpotDetectError, match="bad.tif"):
        open_image(tmp_path / "bad.tif")
    g = zarr.open_group(str(tmp_path / "two.zarr"), mode="w")
    g.create_array("a", shape=(4, 4), dtype="f4")
    g.create_array("b", shape=(4, 4), dtype="f4")
    with pytest.raises(SpotDetectError, match="Fix: pass the path of one array"):
        open_image(tmp_path / "two.zarr")


def test_find_images_in_folders_files_and_globs(tmp_path):
    for n in ("b.tif", "a.npy", "c.ome.tif", "skip.txt"):
        (tmp_path / n).write_bytes(b"x")
    zarr.open_array(str(tmp_path / "d.zarr"), mode="w", shape=(4, 4), dtype="f4")
    (tmp_path / "sub").mkdir()
    assert [p.name for p in find_images([tmp_path])] == ["a.npy", "b.tif", "c.ome.tif", "d.zarr"]
    assert [p.name for p in find_images([str(tmp_path / "*.tif"), tmp_path / "b.tif"])] == ["b.tif", "c.ome.tif"]
    assert [p.name for p in find_images([tmp_path / "d.zarr"])] == ["d.zarr"]
    assert [image_name(p) for p in find_images([tmp_path])] == ["a", "b", "c", "d"]
    with pytest.raises(SpotDetectError, match="Not found: .*nothing"):
        find_images([tmp_path / "nothing.tif"])


def test_opened_image_closes_the_tiff(tmp_path):
    import psutil

    from napari_spotdetect.core.io.image_sources import opened_image

    img = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48)
    tifffile.imwrite(tmp_path / "c.tif", img, tile=(16, 16))
    names = lambda: {f.path for f in psutil.Process().open_files()}  # noqa: E731
    with opened_image(tmp_path / "c.tif") as (arr, _):
        np.testing.assert_array_equal(arr[10:20].compute(), img[10:20])
        assert str(tmp_path / "c.tif") in names()
    assert str(tmp_path / "c.tif") not in names()
