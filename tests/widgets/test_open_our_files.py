"""viewer.open of the files this plugin writes, and of napari's own CSVs, with and without a reader choice.

napari's ``viewer.open(path)`` uses its builtin reader unless told otherwise (``plugin="napari"`` is its
default); File > Open and drag-and-drop pass ``plugin=None`` and ask when two readers claim a file, until the
user makes one the reader for the extension (``settings.plugins.extension2reader``, which the dialog's
"remember" sets). The README names that setting; these tests hold both halves of its promise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from napari.settings import get_settings

from napari_spotdetect import layer_keys as K
from napari_spotdetect.core.io.exports import write_trackmate_xml
from napari_spotdetect.core.io.spots_io import write_spots_csv


@pytest.fixture
def spotdetect_reads_csv():
    """The setting the README names: Spot Detect opens ``*.csv`` (restored afterwards)."""
    plugins = get_settings().plugins
    before = dict(plugins.extension2reader)
    plugins.extension2reader = {**before, "*.csv": "napari-spotdetect"}
    yield
    plugins.extension2reader = before


def test_with_the_setting_our_csv_and_napari_csvs_both_open(make_napari_viewer, tmp_path, spotdetect_reads_csv):
    viewer = make_napari_viewer()
    ours = tmp_path / "cell0.csv"
    write_spots_csv(pd.DataFrame({"y": [3.0, 8.0], "x": [4.0, 9.0], "score": [0.7, 0.9]}), ours)
    [spots] = viewer.open(str(ours), plugin=None)  # what File > Open and dropping a file do
    np.testing.assert_allclose(spots.data, [[3, 4], [8, 9]])
    assert spots.features["score"].tolist() == [0.7, 0.9] and spots.metadata[K.SOURCE_FILE] == str(ours)

    # napari's own tables still open as napari opens them: points, and shapes (which also have axis-* columns)
    pts = viewer.add_points(np.array([[1.0, 2.0], [5.0, 6.0]]), name="napari points")
    shapes = viewer.add_shapes([np.array([[1.0, 2.0], [1.0, 5.0], [4.0, 5.0], [4.0, 2.0]])],
                               shape_type="rectangle", name="napari shapes")
    pts.save(str(tmp_path / "pts.csv"), plugin="napari")
    shapes.save(str(tmp_path / "shapes.csv"), plugin="napari")
    [back_pts] = viewer.open(str(tmp_path / "pts.csv"), plugin=None)
    np.testing.assert_allclose(back_pts.data, pts.data)
    [back_shapes] = viewer.open(str(tmp_path / "shapes.csv"), plugin=None)
    assert type(back_shapes).__name__ == "Shapes" and back_shapes.shape_type == ["rectangle"]
    np.testing.assert_allclose(back_shapes.data[0], shapes.data[0])


def test_trackmate_xml_opens_without_a_choice(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    path = tmp_path / "spots.xml"
    write_trackmate_xml(pd.DataFrame({"y": [3.0, 8.0], "x": [4.0, 9.0], "score": [0.7, 0.9]}), path)
    [spots] = viewer.open(str(path), plugin=None)  # only Spot Detect reads *.xml: File > Open asks nothing
    np.testing.assert_allclose(spots.data, [[3, 4], [8, 9]])
