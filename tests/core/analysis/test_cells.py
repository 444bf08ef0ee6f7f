"""Spots per cell equal counts made by hand on small label images (2-D and 3-D)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_spotdetect.core.analysis.cells import assign_cells, cell_table, count_spots_in_cells
from napari_spotdetect.core.errors import SpotDetectError


@pytest.fixture
def labels_2d():
    cells = np.zeros((20, 30), dtype=np.uint16)
    cells[2:10, 2:12] = 1    # 80 px
    cells[12:18, 5:25] = 2   # 120 px
    cells[2:6, 20:28] = 5    # 32 px, no spots; label 3 and 4 do not exist
    nuclei = np.zeros_like(cells)
    nuclei[4:8, 4:8] = 1     # 16 px, in cell 1
    nuclei[13:16, 6:9] = 7   # 9 px, in cell 2
    return cells, nuclei


def test_2d_counts_match_a_hand_made_table(labels_2d):
    cells, nuclei = labels_2d
    spots = pd.DataFrame({
        "y": [5.0, 6.2, 3.0, 14.0, 16.0, 13.4, 0.0, 19.0, -3.0],
        "x": [5.0, 6.9, 10.6, 7.0, 22.0, 10.0, 0.0, 29.0, 5.0],
        "intensity": [10.0, 20, 30, 1, 2, 3, 99, 99, 99],
    })
    assigned, table = count_spots_in_cells(spots, cells, nuclei, pixel_size=(0.2, 0.2))
    assert assigned["cell"].tolist() == [1, 1, 1, 2, 2, 2, 0, 0, 0]
    assert assigned["compartment"].astype(str).tolist() == [
        "nucleus", "nucleus", "cytoplasm", "nucleus", "cytoplasm", "cytoplasm", "outside", "outside", "outside"]
    expected = pd.DataFrame({
        "cell": [1, 2, 5], "n_spots": [3, 3, 0], "n_nucleus": [2, 1, 0], "n_cytoplasm": [1, 2, 0],
        "mean_spot_intensity": [20.0, 2.0, np.nan], "area_px": [80, 120, 32],
        "centroid_y": [5.5, 14.5, 3.5], "centroid_x": [6.5, 14.5, 23.5], "nucleus_area_px": [16, 9, 0],
        "area_um2": [80 * 0.04, 120 * 0.04, 32 * 0.04],
    })
    expected["spots_per_um2"] = expected["n_spots"] / expected["area_um2"]
    pd.testing.assert_frame_equal(table, expected, check_dtype=False)


def test_fitted_positions_decide_the_cell_when_the_fit_succeeded(labels_2d):
    cells, _ = labels_2d
    spots = pd.DataFrame({"y": [9.4, 9.4], "x": [5.0, 5.0], "y_fit": [12.4, 12.4], "x_fit": [5.0, 5.0],
                          "fit_ok": [True, False]})
    assert assign_cells(spots, cells)["cell"].tolist() == [2, 1]
    assert assign_cells(spots, cells)["compartment"].astype(str).tolist() == ["cell", "cell"]


def test_3d_counts_match_a_hand_made_table():
    cells = np.zeros((4, 10, 10), dtype=np.int32)
    cells[0:2, 1:5, 1:5] = 1   # 32 voxels
    cells[2:4, 1:5, 1:5] = 2   # same footprint, deeper: z decides
    cells[:, 6:9, 6:9] = 3     # 36 voxels
    spots = pd.DataFrame({"z": [0, 1, 2, 3, 3, 1, 0], "y": [2.0, 3, 2, 4, 7, 7, 0], "x": [2.0, 3, 2, 4, 7, 8, 0]})
    assigned, table = count_spots_in_cells(spots, cells, pixel_size=(0.5, 0.1, 0.1))
    assert assigned["cell"].tolist() == [1, 1, 2, 2, 3, 3, 0]
    assert table["cell"].tolist() == [1, 2, 3] and table["n_spots"].tolist() == [2, 2, 2]
    assert table["volume_px"].tolist() == [32, 32, 36]
    np.testing.assert_allclose(table["volume_um3"], np.array([32, 32, 36]) * 0.5 * 0.01)
    np.testing.assert_allclose(table["spots_per_um3"], 2 / table["volume_um3"])
    np.testing.assert_allclose(table["centroid_z"], [0.5, 2.5, 1.5])


def test_2d_cells_are_used_on_every_plane_of_a_stack(labels_2d):
    cells, nuclei = labels_2d
    spots = pd.DataFrame({"z": [0.0, 7.0, 3.0], "y": [5.0, 5, 14], "x": [5.0, 5, 7]})
    assigned, table = count_spots_in_cells(spots, cells, nuclei)
    assert assigned["cell"].tolist() == [1, 1, 2] and table["n_spots"].tolist() == [2, 1, 0]
    assert "area_um2" not in table.columns  # no pixel size: no physical units


def test_molecules_and_image_intensity(labels_2d):
    cells, _ = labels_2d
    spots = pd.DataFrame({"y": [5.0, 6, 14], "x": [5.0, 6, 7], "molecules": [1, 4, 2]})
    image = np.where(cells == 2, 7.0, 1.0)
    table = cell_table(spots, cells, image=image)
    assert table["n_molecules"].tolist() == [5, 2, 0]
    np.testing.assert_allclose(table["mean_image_intensity"], [1.0, 7.0, 1.0])


def test_bad_labels_are_explained(labels_2d):
    cells, _ = labels_2d
    spots = pd.DataFrame({"y": [1.0], "x": [1.0]})
    with pytest.raises(SpotDetectError, match="not integers"):
        assign_cells(spots, cells.astype(float))
    with pytest.raises(SpotDetectError, match="no z column"):
        assign_cells(spots, np.ones((2, 4, 4), dtype=int))
    with pytest.raises(SpotDetectError, match="differ"):
        assign_cells(spots, cells, np.zeros((5, 5), dtype=int))


def test_counts_per_channel_give_a_cells_by_genes_matrix(labels_2d):
    cells, _ = labels_2d
    spots = pd.DataFrame({"c": [0, 1, 1, 0, 2], "y": [5.0, 6, 7, 14, 14], "x": [5.0, 6, 7, 7, 8]})
    table = cell_table(spots, cells, by="c")
    assert table[["n_spots_c0", "n_spots_c1", "n_spots_c2"]].to_numpy().tolist() == [[1, 2, 0], [1, 0, 1],
                                                                                     [0, 0, 0]]
    with pytest.raises(SpotDetectError, match="no 't' column"):
        cell_table(spots, cells, by="t")
