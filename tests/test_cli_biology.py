"""``spotdetect measure / count / export`` and ``predict --fit --labels --trackmate``, driven as a user would."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from napari_spotdetect.cli import main
from napari_spotdetect.core.io.exports import read_trackmate_xml

from .core.analysis.test_fit import draw, grid


@pytest.fixture
def plane(tmp_path):
    truth = grid(5, 16, 10, seed=7)
    np.save(tmp_path / "img.npy", draw((90, 90), truth, 1.4, 2000.0, 100.0, seed=7).astype(np.float32))
    pd.DataFrame({"y": np.rint(truth[:, 0]), "x": np.rint(truth[:, 1]), "score": 0.8}).to_csv(
        tmp_path / "img.csv", index=False)
    return tmp_path, truth


def test_measure_writes_fits_molecules_and_micrometres(plane, capsys):
    tmp, truth = plane
    assert main(["measure", str(tmp / "img.npy"), str(tmp / "img.csv"), "--out", str(tmp / "m.csv"),
                 "--pixel-size", "0.2"]) == 0
    df = pd.read_csv(tmp / "m.csv")
    assert np.abs(df[["y_fit", "x_fit"]].to_numpy() - truth).max() < 0.1
    assert np.abs(df["sigma"] / 1.4 - 1).max() < 0.1 and df["molecules"].eq(1).all()
    np.testing.assert_allclose(df["x_um"], df["x_fit"] * 0.2, rtol=1e-5)
    prov = json.loads((tmp / "m.provenance.json").read_text())
    assert prov["single_molecule_intensity"] == pytest.approx(2000 * 2 * np.pi * 1.4**2, rel=0.05)
    assert "25 spots fitted (25 good fits), 25 molecules" in capsys.readouterr().err


def test_count_writes_a_per_cell_table(plane):
    tmp, truth = plane
    cells = np.zeros((90, 90), np.uint16)
    cells[:, :45] = 1
    cells[:, 45:80] = 2
    np.save(tmp / "cells.npy", cells)
    assert main(["count", str(tmp / "img.csv"), "--cells", str(tmp / "cells.npy"), "--pixel-size", "0.5",
                 "--out", str(tmp / "cells.csv"), "--spots-out", str(tmp / "assigned.csv")]) == 0
    table = pd.read_csv(tmp / "cells.csv")
    x = np.rint(truth[:, 1])
    expected = [int((x < 45).sum()), int(((x >= 45) & (x < 80)).sum())]
    assert table["n_spots"].tolist() == expected
    np.testing.assert_allclose(table["spots_per_um2"], np.array(expected) / (np.array([45, 35]) * 90 * 0.25))
    assert pd.read_csv(tmp / "assigned.csv")["cell"].tolist() == np.where(x < 45, 1, np.where(x < 80, 2, 0)).tolist()
    np.save(tmp / "bad.npy", cells.astype(np.float32))
    assert main(["count", str(tmp / "img.csv"), "--cells", str(tmp / "bad.npy"), "--out", str(tmp / "c.csv")]) == 2


def test_export_to_trackmate_and_points(plane, capsys):
    tmp, _ = plane
    assert main(["export", str(tmp / "img.csv"), "--to", "trackmate", "--out", str(tmp / "img.xml"),
                 "--pixel-size", "0.1", "0.1", "--image-shape", "90", "90"]) == 0
    back = read_trackmate_xml(tmp / "img.xml")
    src = pd.read_csv(tmp / "img.csv")
    np.testing.assert_allclose(back[["y", "x"]], src[["y", "x"]])
    assert "micrometres" in capsys.readouterr().err
    assert main(["export", str(tmp / "img.csv"), "--to", "points", "--out", str(tmp / "pts.csv")]) == 0
    pts = pd.read_csv(tmp / "pts.csv")
    np.testing.assert_allclose(pts["x"], src["x"])  # no pixel size: pixels, and said so
    assert "pixels" in capsys.readouterr().err


def test_predict_fits_counts_per_cell_and_writes_trackmate(tmp_path):
    from napari_spotdetect.core.training.synthetic import synthetic_image

    img, _truth = synthetic_image((128, 128), n_spots=25, seed=3)
    np.save(tmp_path / "a.npy", img)
    cells = np.zeros((128, 128), np.int32)
    cells[:, :64], cells[:, 64:] = 1, 2
    np.save(tmp_path / "cells.npy", cells)
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "a.npy"), "--out", str(out), "--fit", "--labels",
                 str(tmp_path / "cells.npy"), "--pixel-size", "0.11", "--trackmate"]) == 0
    spots = pd.read_csv(out / "a.csv")
    assert {"sigma", "snr", "molecules", "cell", "compartment", "x_um"} <= set(spots.columns)
    table = pd.read_csv(out / "cells" / "a.csv")
    assert table["n_spots"].sum() == len(spots)
    assert table["n_spots"].tolist() == [int((spots["cell"] == 1).sum()), int((spots["cell"] == 2).sum())]
    tm = read_trackmate_xml(out / "a.xml")
    assert len(tm) == len(spots) and tm.attrs["pixel_size"][1:] == pytest.approx((0.11, 0.11))
    prov = json.loads((out / "a.provenance.json").read_text())
    assert prov["cell_table"].endswith("a.csv") and prov["pixel_size_zyx_um"][1:] == [0.11, 0.11]
