"""Silent wrong results, issue 15: axes and pixel size from the file, and settings checked before any work."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_spotdetect.core.common.validate import check_axes
from napari_spotdetect.core.detection.detect import detect
from napari_spotdetect.core.errors import SpotDetectError
from napari_spotdetect.core.groundtruth.metrics import evaluate
from napari_spotdetect.core.io.image_files import read_image_with_info
from napari_spotdetect.core.io.spots_io import NotASpotTable, read_spots_csv


@pytest.fixture(scope="module")
def stack():
    return np.random.default_rng(0).integers(0, 500, (5, 64, 64), dtype=np.uint16)


def test_imagej_zstack_axes_and_pixel_size(tmp_path, stack):
    p = tmp_path / "z.tif"
    tifffile.imwrite(p, stack, imagej=True, resolution=(1 / 0.11, 1 / 0.11),
                     metadata={"axes": "ZYX", "spacing": 0.3, "unit": "um"})
    data, info = read_image_with_info(p)
    assert data.shape == (5, 64, 64) and info.axes == "zyx"
    assert info.pixel_size == pytest.approx({"x": 0.11, "y": 0.11, "z": 0.3}) and info.unit == "um"


def test_imagej_channels_and_ome_axes(tmp_path, stack):
    tifffile.imwrite(tmp_path / "c.tif", stack[:2], imagej=True, metadata={"axes": "CYX"})
    assert read_image_with_info(tmp_path / "c.tif")[1].axes == "cyx"
    tifffile.imwrite(tmp_path / "o.ome.tif", stack.reshape(1, 5, 64, 64).repeat(2, 0), ome=True,
                     metadata={"axes": "CZYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.2, "PhysicalSizeZ": 0.5})
    data, info = read_image_with_info(tmp_path / "o.ome.tif")
    assert data.shape == (2, 5, 64, 64) and info.axes == "czyx"
    assert info.pixel_size == pytest.approx({"x": 0.2, "y": 0.2, "z": 0.5})


def test_plain_tiff_and_npy_have_unknown_axes(tmp_path, stack):
    tifffile.imwrite(tmp_path / "plain.tif", stack)
    np.save(tmp_path / "a.npy", stack)
    assert read_image_with_info(tmp_path / "plain.tif")[1].axes is None
    assert read_image_with_info(tmp_path / "a.npy")[1].axes is None


@pytest.mark.parametrize("cut", [3000, 100, 9])
def test_corrupt_tiff_says_the_file_cannot_be_read(tmp_path, stack, cut):
    tifffile.imwrite(tmp_path / "ok.tif", stack)
    (tmp_path / "bad.tif").write_bytes((tmp_path / "ok.tif").read_bytes()[:cut])
    with pytest.raises(SpotDetectError, match="Cannot read the image .*damaged or truncated"):
        read_image_with_info(tmp_path / "bad.tif")


@pytest.mark.parametrize("ndim", [3, 4])
def test_3d_and_4d_without_axes_name_the_choices(ndim):
    with pytest.raises(SpotDetectError) as e:
        check_axes(ndim, None)
    choices = ["zyx", "cyx", "tyx"] if ndim == 3 else ["tzyx", "czyx", "tcyx"]
    assert all(f"axes='{c}'" in str(e.value) for c in choices)


@pytest.mark.parametrize("axes", ["yxz", "yxt", "xyz", "ycx", "yzx"])
def test_orders_that_put_the_plane_first_are_refused(axes):
    with pytest.raises(SpotDetectError, match="do not end with the image plane"):
        check_axes(3, axes)


@pytest.mark.parametrize("axes", ["zyx", "cyx", "yxc", "zxy", "tyx"])
def test_sensible_orders_pass(axes):
    assert check_axes(3, axes) == axes


def test_detect_refuses_a_stack_without_axes(tiny_piscis, stack):
    with pytest.raises(SpotDetectError, match="nothing says what they are"):
        detect(stack.astype(np.float32), tiny_piscis)


@pytest.mark.parametrize("kw, words", [
    ({"threshold": -1}, "outside the model's score range"),
    ({"threshold": 1.5}, "outside the model's score range"),
    ({"threshold": float("inf")}, "not a number"),
    ({"min_distance": 0}, "Min distance 0"),
    ({"min_distance": -2}, "Min distance"),
    ({"min_distance": 1.5}, "Min distance"),
    ({"batch_size": -1}, "Batch size"),
    ({"batch_size": 0}, "Batch size"),
    ({"tile_size": 8}, "at least 32"),
    ({"tile_size": 60}, "multiple of 8"),
    ({"tile_size": "big"}, "whole number"),
])
def test_settings_checked_before_work(tiny_piscis, kw, words):
    img = np.random.default_rng(0).normal(100, 5, (64, 64)).astype(np.float32)
    with pytest.raises(SpotDetectError, match=words):
        detect(img, tiny_piscis, **kw)


def test_rethreshold_and_set_threshold_refuse_nan(tiny_piscis):
    det = detect(np.random.default_rng(0).normal(100, 5, (64, 64)).astype(np.float32), tiny_piscis, threshold=0.3)
    before = det.threshold
    for call in (det.rethreshold, det.set_threshold, det.count):
        with pytest.raises(SpotDetectError, match="not a number"):
            call(float("nan"))
    assert det.threshold == before and det.provenance["threshold"] == before


@pytest.mark.parametrize("scale, dtype", [(1e200, np.float64), (1e-200, np.float64), (1e20, np.float32),
                                          (1e30, np.float32), (1e-12, np.float32)])
@pytest.mark.slow
def test_detection_does_not_depend_on_intensity_scale(piscis_model, scale, dtype):
    from napari_spotdetect.core.training.synthetic import synthetic_image

    img, truth = synthetic_image((128, 128), n_spots=20, seed=4)
    ref = detect(img.astype(np.float64) / img.max(), piscis_model).spots[["y", "x"]].to_numpy()
    assert evaluate(ref, truth)["f1"] > 0.8  # the reference itself finds the spots
    scaled = (img.astype(np.float64) / img.max() * scale).astype(dtype)
    got = detect(scaled, piscis_model).spots[["y", "x"]].to_numpy()
    assert len(got) == len(ref)
    np.testing.assert_allclose(got, ref, atol=1e-3)


# -- spot tables ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, words", [
    ("\ufeff", None),  # only a BOM: an empty table
    ("y,x\n\"1,2\n", "not a well-formed CSV"),
    ("1,2\n3,abc\n", "not a well-formed CSV"),
    ("y,x\n1,2\nnan,3\n", "NaN or infinite"),
    ("y,x\n1,inf\n", "NaN or infinite"),
    ("y,x\n1,\n", "NaN or infinite"),
    ("y,x\n1,2\n3,junk\n", "not numeric"),
    ("y;x\n1;2\n", "no y/x coordinate"),
    ("index,axis-0,axis-1,axis-2,axis-3,axis-4,axis-5\n0,1,2,3,4,5,6\n", "at most 5"),
])
def test_malformed_spot_csvs_give_our_error(tmp_path, text, words):
    p = tmp_path / "s.csv"
    p.write_text(text, encoding="utf-8")
    if words is None:
        assert len(read_spots_csv(p)) == 0
        return
    with pytest.raises(NotASpotTable, match=words):
        read_spots_csv(p)


def test_bom_and_windows_line_endings_are_read(tmp_path):
    p = tmp_path / "s.csv"
    p.write_bytes("\ufeffy,x\r\n1.5,2\r\n3,4\r\n".encode())
    df = read_spots_csv(p)
    assert list(df.columns) == ["y", "x"] and df.to_numpy().tolist() == [[1.5, 2.0], [3.0, 4.0]]


def test_napari_5d_points_export_columns(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("index,axis-0,axis-1,axis-2,axis-3,axis-4\n0,1,2,3,40,50\n")
    df = read_spots_csv(p)
    assert df[["t", "c", "z", "y", "x"]].to_numpy().tolist() == [[1, 2, 3, 40, 50]]
