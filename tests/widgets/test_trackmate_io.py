"""TrackMate XML through napari: Save a Points layer as .xml, open it again at the same place in the world."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd

from napari_spotdetect._reader import get_trackmate_reader


def test_points_layer_saves_as_trackmate_in_micrometres_and_opens_back(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 50, (30, 3))
    features = pd.DataFrame({"score": rng.uniform(0, 1, 30), "snr": rng.uniform(1, 30, 30), "source": "predicted"})
    layer = viewer.add_points(coords, features=features, name="spots", scale=(0.4, 0.1, 0.1),
                              metadata={"spotdetect": {"layer_axes": "zyx"}})
    path = tmp_path / "spots.xml"
    layer.save(str(path), plugin="napari-spotdetect")
    root = ET.parse(path).getroot()
    assert root.find("Model").get("spatialunits") == "µm"
    first = root.find("Model/AllSpots/SpotsInFrame/Spot")
    np.testing.assert_allclose([float(first.get(k)) for k in ("POSITION_Z", "POSITION_Y", "POSITION_X")],
                               coords[0] * [0.4, 0.1, 0.1])
    [back] = viewer.open(str(path), plugin="napari-spotdetect")
    np.testing.assert_allclose(back.data, coords, atol=1e-9)
    np.testing.assert_allclose(back.scale, [0.4, 0.1, 0.1])
    np.testing.assert_allclose(back.features["snr"], features["snr"])
    np.testing.assert_allclose(back.features["score"], features["score"])


def test_other_xml_files_are_left_to_other_readers(tmp_path):
    (tmp_path / "a.xml").write_text("<svg/>")
    assert get_trackmate_reader(str(tmp_path / "a.xml")) is None
    assert get_trackmate_reader(str(tmp_path / "a.csv")) is None


def test_a_points_table_opens_in_pixels_with_its_scale(make_napari_viewer, tmp_path):
    from napari_spotdetect.core.io.exports import write_points_table

    spots = pd.DataFrame({"z": [1.0, 2.0], "y": [10.0, 20.0], "x": [30.0, 40.0], "score": [0.5, 0.9]})
    path = write_points_table(spots, tmp_path / "a.points.csv", pixel_size=(0.5, 0.1, 0.1))
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin="napari-spotdetect")
    np.testing.assert_allclose(layer.data, spots[["z", "y", "x"]].to_numpy())
    np.testing.assert_allclose(layer.scale, [0.5, 0.1, 0.1])
    assert "x_um" not in layer.features.columns and layer.features["score"].tolist() == [0.5, 0.9]
