"""Measure and count spots in a real (headless) viewer: fit button, per-cell table, exports."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
from tests.core.analysis.test_fit import draw, grid

from napari_spotdetect.core.io.exports import read_points_table, read_trackmate_xml

# waits end as soon as their condition holds; a loaded 2-core machine may need minutes, never a failure
WAIT_MS = 600_000


def _open(viewer):
    _dock, w = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Measure and count spots")
    return w


@pytest.fixture
def scene(make_napari_viewer):
    viewer = make_napari_viewer()
    truth = grid(5, 16, 10, seed=11)
    img = draw((90, 90), truth, 1.5, 2000.0, 100.0, seed=11).astype(np.float32)
    viewer.add_image(img, name="cells smFISH", scale=(0.2, 0.2))
    viewer.add_image(np.zeros((90, 90), np.float32), name="other")  # the widget must pick the right one
    spots = viewer.add_points(np.rint(truth), name="cells smFISH spots", scale=(0.2, 0.2),
                              features=pd.DataFrame({"score": np.linspace(0.5, 1, len(truth))}),
                              metadata={"spotdetect": {"image_layer": "cells smFISH", "layer_axes": "yx"}})
    return viewer, spots, truth


def test_fit_button_measures_every_spot_into_the_layer(scene, qtbot):
    viewer, spots, truth = scene
    w = _open(viewer)
    w.set_layer(spots)
    assert w.image_layer.name == "cells smFISH"
    assert "0.2, 0.2 um" in w.units_text
    w.set_sigma(1.8)  # a rough guess is enough: the fit finds 1.5
    worker = w.fit()
    assert worker is not None
    qtbot.waitUntil(lambda: not w.running, timeout=WAIT_MS)
    f = spots.features
    assert len(f) == len(truth) and f["score"].iloc[-1] == 1.0  # features kept, measurements added
    assert np.abs(f[["y_fit", "x_fit"]].to_numpy() - truth).max() < 0.1
    assert np.abs(f["sigma"] / 1.5 - 1).max() < 0.1 and f["molecules"].eq(1).all()
    np.testing.assert_allclose(f["x_um"], f["x_fit"] * 0.2)
    note = spots.metadata["spotdetect"]["gaussian_fit"]
    assert note["n_fit_ok"] == len(truth) and note["single_molecule_intensity"] > 0
    assert "Fitted 25 spots" in w.status


@pytest.mark.slow
def test_count_per_cell_fills_the_table_and_exports(scene, tmp_path):
    viewer, spots, truth = scene
    cells = np.zeros((90, 90), np.int32)
    cells[:, :45], cells[:, 45:80] = 1, 2
    nuclei = np.zeros_like(cells)
    nuclei[:45, :45] = 4
    viewer.add_labels(cells, name="cells", scale=(0.2, 0.2))
    viewer.add_labels(nuclei, name="nuclei", scale=(0.2, 0.2))
    w = _open(viewer)
    w.set_layer(spots)
    w.set_labels(viewer.layers["cells"], viewer.layers["nuclei"])
    table = w.count()
    y, x = np.rint(truth).T
    expect = [int((x < 45).sum()), int(((x >= 45) & (x < 80)).sum())]
    assert table["n_spots"].tolist() == expect
    assert table["n_nucleus"].tolist() == [int(((x < 45) & (y < 45)).sum()), 0]
    np.testing.assert_allclose(table["spots_per_um2"], np.array(expect) / (np.array([45, 35]) * 90 * 0.04))
    assert spots.features["cell"].tolist() == np.where(x < 45, 1, np.where(x < 80, 2, 0)).tolist()
    assert [row[1] for row in w.table_text()] == [str(e) for e in expect]
    assert spots.metadata["spotdetect"]["cells"]["labels_layer"] == "cells"

    w.set_export_path(tmp_path / "result")
    cells_csv = w.export("cells")
    assert pd.read_csv(cells_csv)["n_spots"].tolist() == expect
    xml = w.export("trackmate")
    back = read_trackmate_xml(xml)
    assert ET.parse(xml).getroot().find("Model").get("spatialunits") == "µm"
    np.testing.assert_allclose(back[["y", "x"]], np.rint(truth))
    assert back["cell"].tolist() == spots.features["cell"].tolist()
    pts = read_points_table(w.export("points"))
    np.testing.assert_allclose(pts["x_um"], np.rint(truth[:, 1]) * 0.2)


def test_missing_labels_are_explained(scene):
    viewer, spots, _ = scene
    w = _open(viewer)
    w.set_layer(spots)
    assert w.count() is None and "Fix:" in w.status and "Labels" in w.status


@pytest.mark.slow
def test_z_stack_with_anisotropic_scale_and_cells_drawn_on_a_projection(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    yx = grid(3, 16, 12, seed=12)
    truth = np.column_stack([np.random.default_rng(12).uniform(5, 7, len(yx)), yx])
    stack = draw((12, 60, 60), truth, (2.0, 1.2), 2000.0, 80.0, seed=12).astype(np.float32)
    viewer.add_image(stack, name="stack", scale=(0.3, 0.1, 0.1))
    spots = viewer.add_points(np.rint(truth), name="stack spots", scale=(0.3, 0.1, 0.1),
                              features=pd.DataFrame({"score": np.ones(len(truth))}),
                              metadata={"spotdetect": {"image_layer": "stack", "layer_axes": "zyx"}})
    cells = np.zeros((60, 60), np.int32)
    cells[:30], cells[30:] = 1, 2  # a 2-D segmentation: applies to every plane
    viewer.add_labels(cells, name="cells 2d", scale=(0.1, 0.1))
    w = _open(viewer)
    w.set_layer(spots)
    assert "0.3, 0.1, 0.1 um (z, y, x)" in w.units_text
    w.fit()
    qtbot.waitUntil(lambda: not w.running, timeout=WAIT_MS)
    f = spots.features
    assert np.abs(f[["z_fit", "y_fit", "x_fit"]].to_numpy() - truth).max() < 0.1
    assert np.abs(f["sigma_z"] / 2.0 - 1).max() < 0.1 and np.abs(f["sigma"] / 1.2 - 1).max() < 0.1
    np.testing.assert_allclose(f["z_um"], f["z_fit"] * 0.3)
    np.testing.assert_allclose(f["sigma_z_um"], f["sigma_z"] * 0.3)
    w.set_labels(viewer.layers["cells 2d"])
    table = w.count()
    expect = [int((np.rint(truth[:, 1]) < 30).sum()), int((np.rint(truth[:, 1]) >= 30).sum())]
    assert table["n_spots"].tolist() == expect
    np.testing.assert_allclose(table["area_um2"], [30 * 60 * 0.01] * 2)


@pytest.mark.parametrize("labels, scale, named", [
    (np.ones((80, 90), np.int32), (0.2, 0.2), ["(80, 90)", "(90, 90)"]),  # cropped
    (np.ones((90, 90), np.int32), (1.0, 1.0), ["(1, 1)", "(0.2, 0.2)"]),  # loaded without the image's scale
])
def test_labels_on_another_grid_are_refused_naming_both(scene, labels, scale, named):
    """Labels of another shape or scale counted spots in the wrong cells without a word (issue 23, item 14)."""
    viewer, spots, _ = scene
    viewer.add_labels(labels, name="cells", scale=scale)
    w = _open(viewer)
    w.set_layer(spots)
    w._cells.value = viewer.layers["cells"]
    w._count.native.click()  # the panel's Count button
    for text in named + ["'cells'", "'cells smFISH'", "Fix:"]:
        assert text in w.status, (text, w.status)
    assert "cell" not in spots.features.columns and not w.table_text()
