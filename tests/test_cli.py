"""The command line, driven as a user would."""

import json

import numpy as np
import pandas as pd
import pytest

from napari_spotdetect.cli import main
from napari_spotdetect.core.groundtruth.metrics import evaluate

from .conftest import PISCIS_FIX, need_shared


@pytest.mark.slow
def test_predict_writes_csv_and_provenance(tmp_path, piscis_fixture_file, capsys):
    img = np.load(need_shared(PISCIS_FIX / "img300x420.npy"))
    np.save(tmp_path / "cells.npy", img)
    assert main(["predict", str(tmp_path / "cells.npy"), "--model", str(piscis_fixture_file),
                 "--out", str(tmp_path / "out")]) == 0
    df = pd.read_csv(tmp_path / "out" / "cells.csv")
    assert list(df.columns[:4]) == ["y", "x", "score", "intensity"]
    ref = np.loadtxt(PISCIS_FIX / "img300x420_piscis_coords.csv", delimiter=",", skiprows=1)
    assert len(df) == len(ref) == 92
    prov = json.loads((tmp_path / "out" / "cells.provenance.json").read_text())
    assert prov["model_sha256"] == json.loads((PISCIS_FIX / "fixture_summary.json").read_text())["pt_sha256"]
    assert prov["threshold"] == 0.5 and prov["tiling"]["grid"] == [2, 2] and prov["n_spots"] == 92
    assert "package_version" in prov


@pytest.mark.slow
def test_predict_with_augmentation_records_it(tmp_path):
    from napari_spotdetect.core.training.synthetic import synthetic_image

    img, truth = synthetic_image((128, 128), n_spots=25, seed=3)
    np.save(tmp_path / "a.npy", img)
    assert main(["predict", str(tmp_path / "a.npy"), "--out", str(tmp_path / "out"), "--augment"]) == 0
    prov = json.loads((tmp_path / "out" / "a.provenance.json").read_text())
    assert prov["test_time_augmentation"] is True
    found = pd.read_csv(tmp_path / "out" / "a.csv")[["y", "x"]].to_numpy()
    assert evaluate(found, truth)["f1"] > 0.9


def test_predict_with_a_contrast_floor_keeps_only_what_stands_out(tmp_path, capsys):
    from napari_spotdetect.core.training.synthetic import spots_in_texture

    img, bright = spots_in_texture(seed=1)
    np.save(tmp_path / "a.npy", img)
    counts = {}
    for floor in ("0", "0.35"):
        out = tmp_path / f"out{floor}"
        assert main(["predict", str(tmp_path / "a.npy"), "--out", str(out), "--contrast-floor", floor]) == 0
        df = pd.read_csv(out / "a.csv")
        assert ({"contrast", "relative_contrast"} <= set(df.columns)) == (floor != "0")  # computed when used
        assert json.loads((out / "a.provenance.json").read_text())["contrast_floor"] == float(floor)
        counts[floor] = len(df)
    assert counts["0"] > 2 * counts["0.35"] and evaluate(df[["y", "x"]].to_numpy(), bright, 2.0)["f1"] > 0.95
    assert main(["predict", str(tmp_path / "a.npy"), "--out", str(tmp_path / "bad"), "--contrast-floor", "5"]) == 2
    err = capsys.readouterr().err
    assert "Contrast floor 5 is outside 0 to 2" in err and "Traceback" not in err
    assert not (tmp_path / "bad" / "a.csv").exists()


def test_predict_reports_bad_model_without_traceback(tmp_path, capsys):
    np.save(tmp_path / "a.npy", np.zeros((32, 32), np.float32))
    assert main(["predict", str(tmp_path / "a.npy"), "--model", str(tmp_path / "nope.pt"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err


def _write(path, pts, cols=("y", "x")):
    pd.DataFrame(np.asarray(pts, float).reshape(-1, len(cols)), columns=list(cols)).to_csv(path, index=False)


def test_evaluate_prints_and_writes_json(tmp_path, capsys):
    (tmp_path / "pred").mkdir()
    (tmp_path / "truth").mkdir()
    _write(tmp_path / "pred" / "a.csv", [(0, 0), (5, 5)])
    _write(tmp_path / "truth" / "a.csv", [(0.5, 0), (5, 6.5), (9, 9)])
    _write(tmp_path / "pred" / "b.csv", [(10, 10), (20, 20)])
    _write(tmp_path / "truth" / "b.csv", [(10.2, 10), (20, 20.1)])
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth"),
                 "--radius", "1", "--json", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "mean" in out and "0.4000" in out
    doc = json.loads((tmp_path / "m.json").read_text())
    a = doc["images"][0]
    assert a["image"] == "a" and a["f1"] == pytest.approx(0.4) and a["f1_integral"] == pytest.approx(0.5306, abs=1e-4)
    assert doc["images"][1]["f1"] == 1.0
    assert doc["mean"]["f1"] == pytest.approx(0.7)
    assert set(doc["mean"]) == {"precision", "recall", "f1", "f1_integral"}


def test_evaluate_matches_piscis_metrics_on_fixture(tmp_path):
    summary = json.loads(need_shared(PISCIS_FIX / "fixture_summary.json").read_text())["results"]["img256"]
    pred = np.loadtxt(PISCIS_FIX / "img256_piscis_coords.csv", delimiter=",", skiprows=1)
    truth = np.loadtxt(PISCIS_FIX / "img256_true_coords.csv", delimiter=",", skiprows=1)
    res = evaluate(pred, truth, 1.0)
    assert res["f1"] == pytest.approx(summary["metrics_at_1px"]["f1"], abs=1e-6)
    assert res["f1_integral"] == pytest.approx(summary["f1_integral_0_3px_50thr"], abs=1e-6)


def test_evaluate_reads_piscis_headerless_and_napari_layouts(tmp_path, capsys):
    (tmp_path / "pred").mkdir()
    (tmp_path / "truth").mkdir()
    np.savetxt(tmp_path / "pred" / "x.csv", np.array([[1.0, 2.0], [30.0, 40.0]]), delimiter=",")
    pd.DataFrame({"index": [0, 1], "axis-0": [1.0, 30.2], "axis-1": [2.0, 40.0]}).to_csv(
        tmp_path / "truth" / "x.csv", index=False)
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth"),
                 "--json", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["mean"]["f1"] == 1.0


def test_evaluate_skips_rejected_sidecars_and_reads_header_only_tables(tmp_path, capsys):
    (tmp_path / "pred").mkdir()
    (tmp_path / "truth").mkdir()
    _write(tmp_path / "pred" / "a.csv", [(1, 1)])
    _write(tmp_path / "truth" / "a.csv", [(1, 1.2)])
    _write(tmp_path / "truth" / "a.rejected.csv", [(5, 5)])
    _write(tmp_path / "pred" / "empty.csv", [])
    _write(tmp_path / "truth" / "empty.csv", [])
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth"),
                 "--json", str(tmp_path / "m.json")]) == 0
    doc = json.loads((tmp_path / "m.json").read_text())
    assert [r["image"] for r in doc["images"]] == ["a", "empty"]
    assert doc["images"][1]["f1"] == 1.0 and "warning" not in capsys.readouterr().err
