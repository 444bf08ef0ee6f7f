"""Exports reach the next tool: TrackMate XML with the fields TrackMate reads, tables with um and pixels."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from napari_spotdetect.core.errors import SpotDetectError
from napari_spotdetect.core.io.exports import (
    TRACKMATE_REQUIRED,
    read_cell_table,
    read_points_table,
    read_trackmate_xml,
    write_cell_table,
    write_h5ad,
    write_points_table,
    write_trackmate_xml,
)
from napari_spotdetect.core.io.units import as_pixel_size, pixel_size_from_scale, with_micrometres


@pytest.fixture
def spots_3d():
    return pd.DataFrame({
        "t": [0, 0, 1], "z": [2.0, 5.0, 3.0], "y": [10.0, 20.0, 30.0], "x": [11.0, 21.0, 31.0],
        "score": [0.9, 0.8, np.nan], "intensity": [100.0, 200.0, 300.0], "source": ["predicted"] * 2 + ["manual"],
        "z_fit": [2.2, 5.1, 3.0], "y_fit": [10.3, 19.8, 30.0], "x_fit": [11.4, 20.9, 31.0],
        "sigma": [1.2, 1.4, np.nan], "fit_ok": [True, True, False], "cell": [3, 0, 7],
    })


def test_trackmate_xml_round_trip_in_micrometres(spots_3d, tmp_path):
    path = write_trackmate_xml(spots_3d, tmp_path / "spots.xml", pixel_size=(0.3, 0.1, 0.1),
                               image_shape=(2, 9, 64, 64), image_name="/data/cells.tif")
    root = ET.parse(path).getroot()
    assert root.tag == "TrackMate"
    model = root.find("Model")
    assert model.get("spatialunits") == "µm"
    frames = model.findall("AllSpots/SpotsInFrame")
    assert [f.get("frame") for f in frames] == ["0", "1"] and model.find("AllSpots").get("nspots") == "3"
    spot = frames[0].find("Spot")
    assert set(TRACKMATE_REQUIRED) <= set(spot.attrib)
    # fitted centre (the fit succeeded) times the pixel size
    assert float(spot.get("POSITION_X")) == pytest.approx(11.4 * 0.1)
    assert float(spot.get("POSITION_Z")) == pytest.approx(2.2 * 0.3)
    assert float(spot.get("QUALITY")) == pytest.approx(0.9)
    assert float(spot.get("RADIUS")) == pytest.approx(np.sqrt(2) * 1.2 * 0.1)
    declared = {f.get("feature") for f in model.findall("FeatureDeclarations/SpotFeatures/Feature")}
    assert {"QUALITY", "POSITION_X", "FRAME", "INTENSITY", "SIGMA", "CELL", "FIT_OK"} <= declared
    assert all(k in declared for s in model.iter("Spot") for k in s.attrib if k not in ("ID", "name"))
    img = root.find("Settings/ImageData")
    assert (img.get("width"), img.get("height"), img.get("nslices"), img.get("nframes")) == ("64", "64", "9", "2")
    assert float(img.get("voxeldepth")) == 0.3 and img.get("filename") == "cells.tif"
    assert root.find("Settings/BasicSettings").get("zend") == "8"

    back = read_trackmate_xml(path)
    assert back.attrs["pixel_size"] == pytest.approx((0.3, 0.1, 0.1))
    np.testing.assert_allclose(back["x"], [11.4, 20.9, 31.0])
    np.testing.assert_allclose(back["z"], [2.2, 5.1, 3.0])
    assert back["t"].tolist() == [0, 0, 1]
    np.testing.assert_allclose(back["score"], [0.9, 0.8, 1.0])  # a hand-placed spot gets quality 1
    assert back["cell"].tolist() == [3, 0, 7] and back["intensity"].tolist() == [100, 200, 300]


def test_trackmate_xml_in_pixels_for_a_plane(tmp_path):
    spots = pd.DataFrame({"y": [4.5, 8.0], "x": [1.0, 2.5], "score": [0.7, 0.6]})
    path = write_trackmate_xml(spots, tmp_path / "p.xml")
    root = ET.parse(path).getroot()
    assert root.find("Model").get("spatialunits") == "pixel"
    assert root.find("Settings/ImageData").get("nslices") == "1"
    back = read_trackmate_xml(path)
    assert back.attrs["pixel_size"] is None and "z" not in back.columns
    np.testing.assert_allclose(back[["y", "x"]], spots[["y", "x"]])


def test_reading_something_else_is_explained(tmp_path):
    (tmp_path / "a.xml").write_text("<root><x/></root>")
    with pytest.raises(SpotDetectError, match="not a TrackMate file"):
        read_trackmate_xml(tmp_path / "a.xml")
    (tmp_path / "b.xml").write_text("not xml")
    with pytest.raises(SpotDetectError, match="Fix:"):
        read_trackmate_xml(tmp_path / "b.xml")


def test_points_table_has_um_and_pixels_and_reads_back(spots_3d, tmp_path):
    path = write_points_table(spots_3d, tmp_path / "points.csv", pixel_size=(0.3, 0.1, 0.1))
    df = pd.read_csv(path)
    assert list(df.columns[:6]) == ["x", "y", "z", "x_px", "y_px", "z_px"]
    np.testing.assert_allclose(df["x"], np.array([11.4, 20.9, 31.0]) * 0.1)
    np.testing.assert_allclose(df["z"], np.array([2.2, 5.1, 3.0]) * 0.3)
    back = read_points_table(path)
    np.testing.assert_allclose(back[["z", "y", "x"]], [[2.2, 10.3, 11.4], [5.1, 19.8, 20.9], [3.0, 30.0, 31.0]])
    np.testing.assert_allclose(back["x_um"], df["x"])
    assert back.attrs["pixel_size"] == pytest.approx((0.3, 0.1, 0.1)) and back["cell"].tolist() == [3, 0, 7]
    with pytest.raises(SpotDetectError, match="z step"):
        write_points_table(spots_3d, tmp_path / "p2.csv", pixel_size=(0.1, 0.1))


def test_cell_table_round_trip_and_h5ad(tmp_path):
    table = pd.DataFrame({"n_spots": [3, 0], "cell": [1, 2], "area_px": [80, 20]})
    path = write_cell_table(table, tmp_path / "cells.csv")
    back = read_cell_table(path)
    assert list(back.columns) == ["cell", "n_spots", "area_px"] and back["n_spots"].tolist() == [3, 0]
    try:
        import anndata
    except ImportError:
        with pytest.raises(SpotDetectError, match="pip install anndata"):
            write_h5ad(table, tmp_path / "cells.h5ad")
    else:  # pragma: no cover - only where anndata is installed
        ad = anndata.read_h5ad(write_h5ad(table, tmp_path / "cells.h5ad"))
        assert ad.shape == (2, 1) and ad.X[:, 0].tolist() == [3, 0]


def test_pixel_sizes_from_arguments_and_layer_scales():
    assert as_pixel_size(0.1) == (0.1, 0.1, 0.1)
    assert np.isnan(as_pixel_size((0.2, 0.1))[0])
    assert pixel_size_from_scale((1, 1, 1), "zyx") is None  # napari's default scale says nothing
    assert pixel_size_from_scale((1, 0.5, 0.11, 0.11), "tzyx") == (0.5, 0.11, 0.11)
    assert pixel_size_from_scale((0.11, 0.11), "yx")[1:] == (0.11, 0.11)
    with pytest.raises(SpotDetectError, match="micrometres"):
        as_pixel_size((0, 1, 1))
    spots = pd.DataFrame({"z": [2.0], "y": [3.0], "x": [4.0], "sigma_z": [2.0], "sigma": [1.0]})
    um = with_micrometres(spots, (0.5, 0.1, 0.1))
    assert um[["z_um", "y_um", "x_um", "sigma_um", "sigma_z_um"]].iloc[0].tolist() == pytest.approx(
        [1.0, 0.3, 0.4, 0.1, 1.0])


def test_missing_values_are_written_as_java_reads_them(spots_3d, tmp_path):
    spots_3d["snr"] = [np.inf, 3.0, np.nan]
    root = ET.parse(write_trackmate_xml(spots_3d, tmp_path / "s.xml")).getroot()
    sp = root.findall("Model/AllSpots/SpotsInFrame/Spot")
    assert [s.get("SNR") for s in sp] == ["Infinity", "3.0", "NaN"] and sp[2].get("SIGMA") == "NaN"


def test_points_table_in_pixels_reads_back_without_micrometres(spots_3d, tmp_path):
    back = read_points_table(write_points_table(spots_3d, tmp_path / "px.csv"))
    assert "x_um" not in back.columns and "pixel_size" not in back.attrs
    np.testing.assert_allclose(back["x"], [11.4, 20.9, 31.0])
