"""Spot CSVs through napari: the plugin's writer and reader round-trip Points layers and their features."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from napari_spotdetect._reader import get_reader
from napari_spotdetect._writer import write_points
from napari_spotdetect.core.io.spots_io import provenance_path


def _read(path):
    reader = get_reader(str(path))
    assert reader is not None
    [(data, kw, kind)] = reader(str(path))
    assert kind == "points"
    return data, kw


def test_points_layer_round_trips_through_writer_and_reader(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 100, (50, 3))
    features = pd.DataFrame({"score": rng.uniform(0, 1, 50), "intensity": rng.uniform(100, 900, 50),
                             "source": ["predicted"] * 25 + ["manual"] * 25, "model": "tiny"})
    layer = viewer.add_points(coords, features=features, name="spots",
                              metadata={"spotdetect": {"model": "tiny", "threshold": 0.4, "layer_axes": "zyx"}})
    path = tmp_path / "spots.csv"
    layer.save(str(path), plugin="napari-spotdetect")

    header = path.read_text().splitlines()[0]
    assert header == "z,y,x,score,intensity,source,model"
    assert json.loads(provenance_path(path).read_text())["threshold"] == 0.4

    [back] = viewer.open(str(path), plugin="napari-spotdetect")
    np.testing.assert_allclose(back.data, coords, atol=1e-6)
    pd.testing.assert_frame_equal(back.features.reset_index(drop=True), features, check_dtype=False, atol=1e-6)
    assert back.metadata["spotdetect"]["threshold"] == 0.4


@pytest.mark.parametrize(("text", "expected"), [
    ("row,col\n1.5,2\n3,4\n", [[1.5, 2], [3, 4]]),
    ("index,axis-0,axis-1,axis-2\n0,1,2,3\n1,4,5,6\n", [[1, 2, 3], [4, 5, 6]]),
    ("2,3.5\n7,8\n", [[2, 3.5], [7, 8]]),  # piscis: no header
    ("y,x,score\n10,20,0.9\n", [[10, 20]]),
])
def test_reader_accepts_common_layouts(tmp_path, text, expected):
    path = tmp_path / "spots.csv"
    path.write_text(text)
    data, kw = _read(path)
    np.testing.assert_allclose(data, expected)
    assert "index" not in kw["features"].columns


@pytest.mark.parametrize("text", ["gene,count\nACTB,12\n", "", "name;value\n"])
def test_reader_declines_tables_without_spots(tmp_path, text):
    path = tmp_path / "other.csv"
    path.write_text(text) if text else path.write_bytes(b"\xff\xfe\x00garbage")
    assert get_reader(str(path)) is None
    assert get_reader(str(tmp_path / "missing.csv")) is None
    assert get_reader(str(tmp_path / "image.tif")) is None


def test_writer_never_leaves_a_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "spots.csv"
    path.write_text("y,x\n1,2\n")

    def crash(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        write_points(str(path), np.ones((3, 2)), {"features": pd.DataFrame({"score": [1.0, 2.0, 3.0]})})
    assert path.read_text() == "y,x\n1,2\n"  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["spots.csv"]  # no temporary left behind


def test_writer_names_axes_from_labels_or_rank(tmp_path):
    p = tmp_path / "a.csv"
    write_points(str(p), np.zeros((2, 3)), {"axis_labels": ("time", "row", "col")})
    assert p.read_text().splitlines()[0] == "t,y,x"
    write_points(str(p), np.zeros((2, 3)), {"axis_labels": ("-3", "-2", "-1")})
    assert p.read_text().splitlines()[0] == "z,y,x"
