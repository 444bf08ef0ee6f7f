"""QC in a real (headless) viewer: the numbers are the CLI's, the canvas shows TP/FP/FN, the table exports."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from napari.utils.colormaps.standardize_color import transform_color

from napari_spotdetect import layer_keys as K
from napari_spotdetect.cli import main
from napari_spotdetect.core.groundtruth import annotations as A
from napari_spotdetect.core.groundtruth.metrics import evaluate
from napari_spotdetect.core.io.spots_io import write_spots_csv
from napari_spotdetect.widgets.layers import QC_COLOURS

KEYS = ("precision", "recall", "f1", "f1_integral", "tp", "fp", "fn", "n_pred", "n_true")


def _open(viewer):
    _dock, w = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Check against ground truth")
    return w


@pytest.mark.slow
def test_scores_match_evaluate_and_the_cli_and_canvas_shows_mistakes(detected_2d, tmp_path, capsys):
    viewer, _image, spots, truth = detected_2d
    spots.add(truth.data[:40] + 0.3)  # the random test network finds nothing real: give it some hits
    w = _open(viewer)
    w.set_layers(spots, truth)
    w.set_layers(*w.chosen, radius=1.5)
    rows = w.compare()
    assert len(rows) == 1
    expected = evaluate(spots.data, truth.data, 1.5)
    assert {k: rows[0][k] for k in KEYS} == expected
    assert 0 < expected["tp"] < expected["n_pred"]
    assert f"F1 {expected['f1']:.3f}" in w.summary

    # the CLI on CSVs written from the same layers prints and stores the same numbers
    for folder, layer in (("pred", spots), ("truth", truth)):
        write_spots_csv(A.spots_table(layer.data, None, "yx"), tmp_path / folder / "img.csv")
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth"),
                 "--radius", "1.5", "--json", str(tmp_path / "e.json")]) == 0
    cli = json.loads((tmp_path / "e.json").read_text())["images"][0]
    for k in KEYS:
        assert cli[k] == pytest.approx(rows[0][k], abs=1e-9), k
    assert f"{expected['f1']:.4f}" in capsys.readouterr().out

    qc = spots.features["qc"].to_numpy()
    assert (qc == "TP").sum() == expected["tp"] and (qc == "FP").sum() == expected["fp"]
    np.testing.assert_allclose(spots.border_color[qc == "TP"] - transform_color(QC_COLOURS["TP"])[0], 0, atol=1e-6)
    np.testing.assert_allclose(spots.border_color[qc == "FP"] - transform_color(QC_COLOURS["FP"])[0], 0, atol=1e-6)
    missed = [lay for lay in viewer.layers if K.QC_MISSED in lay.metadata]
    assert len(missed) == 1 and len(missed[0].data) == expected["fn"]
    # each missed truth really has no prediction within the radius that was left unmatched
    tp_pred = spots.data[qc == "TP"]
    assert all(np.any(np.all(np.isclose(truth.data, m), axis=1)) for m in missed[0].data)
    assert len(tp_pred) + len(missed[0].data) == len(truth.data)

    # comparing again at another radius updates the same FN layer instead of adding one
    w.set_layers(*w.chosen, radius=3.0)
    rows3 = w.compare()
    assert rows3[0]["f1"] == evaluate(spots.data, truth.data, 3.0)["f1"]
    assert len([lay for lay in viewer.layers if K.QC_MISSED in lay.metadata]) == 1
    assert len(missed[0].data) == rows3[0]["fn"]


@pytest.mark.slow
def test_several_images_pair_by_image_and_export(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    truths = {}
    for name in ("cells A", "cells B"):
        t = rng.uniform(5, 120, (30, 2))
        p = np.vstack([t[:25] + rng.normal(0, 0.2, (25, 2)), rng.uniform(5, 120, (4, 2))])
        viewer.add_points(p, name=f"{name} spots", metadata={"spotdetect": {"image_layer": name}},
                          features=pd.DataFrame({"score": rng.uniform(0.5, 1, len(p)), "source": "predicted"}))
        viewer.add_points(t, name=f"{name} ground truth", metadata={K.TRUTH: {"image": name}})
        truths[name] = (p, t)
    w = _open(viewer)
    assert [lay.name for lay in w.chosen] == ["cells A spots", "cells A ground truth"]
    rows = w.compare()
    assert [r["image"] for r in rows] == ["cells A", "cells B"]
    for r in rows:
        p, t = truths[r["image"]]
        assert r["f1"] == evaluate(p, t, 1.0)["f1"] and r["truth"] == f"{r['image']} ground truth"
    assert [row[0] for row in w.table_text()] == ["cells A", "cells B"]
    out = w.export_table(tmp_path / "qc")
    df = pd.read_csv(out)
    assert out.name == "qc.csv" and list(df.columns) == A.QC_COLUMNS
    assert df["image"].tolist() == ["cells A", "cells B"]
    np.testing.assert_allclose(df["f1_integral"], [r["f1_integral"] for r in rows], atol=1e-6)
    assert df["fn"].tolist() == [r["fn"] for r in rows]


def test_same_layer_twice_is_refused(make_napari_viewer):
    viewer = make_napari_viewer()
    lay = viewer.add_points(np.ones((3, 2)), name="x")
    w = _open(viewer)
    w.set_layers(lay, lay)
    assert w.compare() == [] and "same layer" in w.summary
