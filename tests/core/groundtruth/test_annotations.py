"""Ground-truth editing logic without Qt: snapping in stacks, tables on disk, undo, QC numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_spotdetect.core.errors import SpotDetectError
from napari_spotdetect.core.groundtruth import annotations as A
from napari_spotdetect.core.groundtruth.metrics import evaluate
from napari_spotdetect.core.io.spots_io import read_spots_csv


def _blob(shape, centre, sigma=1.2, amp=500.0):
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    r2 = sum((g - c) ** 2 for g, c in zip(grids, centre))
    return 100.0 + amp * np.exp(-r2 / (2 * sigma**2))


def test_snap_moves_only_yx_and_uses_the_clicked_plane():
    img = np.full((5, 32, 32), 100.0)
    img[3] = _blob((32, 32), (12.3, 20.6))
    img[1] = _blob((32, 32), (14.0, 18.0))  # another spot on another plane must not attract the click
    out = A.snap_point(img, (3.2, 13.2, 19.8), "zyx")
    assert out[0] == pytest.approx(3.2)
    np.testing.assert_allclose(out[1:], (12.3, 20.6), atol=0.15)
    out1 = A.snap_point(img, (1.0, 13.2, 19.8), "zyx")
    np.testing.assert_allclose(out1[1:], (14.0, 18.0), atol=0.3)


def test_snap_outside_the_image_leaves_the_point_and_bad_axes_say_why():
    img = _blob((16, 16), (8, 8))
    np.testing.assert_allclose(A.snap_point(img, (30.0, 3.0), "yx"), (30.0, 3.0))
    with pytest.raises(SpotDetectError, match="choose the image"):
        A.snap_point(img, (3.0, 3.0, 3.0), "zyx")


def test_manual_rows_lose_the_prediction_they_were_copied_from():
    f = pd.DataFrame({"score": [0.9, 0.9], "intensity": [5.0, 5.0], "source": ["predicted"] * 2, "model": ["m"] * 2})
    out = A.manual_features(f, [1])
    assert out["source"].tolist() == ["predicted", "manual"]
    assert np.isnan(out.loc[1, "score"]) and np.isnan(out.loc[1, "intensity"]) and out.loc[0, "score"] == 0.9
    removed = A.rejected_rows(out)
    assert removed["score"].tolist() == [0.9]


def test_review_order_puts_low_scores_first_and_manual_last():
    f = pd.DataFrame({"score": [0.8, np.nan, 0.55, 0.99]})
    assert A.review_order(f).tolist() == [2, 0, 3, 1]


def test_paths_follow_the_image_file_or_need_a_folder(tmp_path):
    truth, rej = A.annotation_paths("cells", tmp_path / "img" / "cells_01.tif")
    assert truth == tmp_path / "img" / "cells_01.csv" and rej.name == "cells_01.rejected.csv"
    truth, _ = A.annotation_paths("smFISH (synthetic)", None, tmp_path)
    assert truth == tmp_path / "smFISH_synthetic.csv"
    with pytest.raises(SpotDetectError, match="choose a folder"):
        A.annotation_paths("smFISH (synthetic)")


def test_save_writes_truth_and_clears_rejected_when_all_undone(tmp_path):
    table = A.spots_table(np.array([[1.0, 2.0], [3.0, 4.5]]), pd.DataFrame({"source": ["manual", "predicted"]}), "yx")
    rej = A.spots_table(np.array([[9.0, 9.0]]), pd.DataFrame({"score": [0.6]}), "yx")
    t, r = tmp_path / "a.csv", tmp_path / "a.rejected.csv"
    A.save_annotations(table, rej, t, r, {"model": "x"})
    back = read_spots_csv(t)
    np.testing.assert_allclose(back[["y", "x"]].to_numpy(), [[1, 2], [3, 4.5]])
    assert back["source"].tolist() == ["manual", "predicted"]
    assert read_spots_csv(r)["score"].tolist() == [0.6]
    A.save_annotations(table, rej.iloc[0:0], t, r)
    assert not r.exists()


def test_history_undo_redo_round_trip():
    h = A.History(limit=2)
    s = [A.Snapshot.take(np.full((k, 2), k), pd.DataFrame({"v": range(k)}), pd.DataFrame()) for k in range(4)]
    for before in s[:3]:
        h.push(before)
    back = h.undo(s[3])
    assert len(back.data) == 2
    assert len(h.undo(back).data) == 1
    assert h.undo(s[1]) is None  # limit 2: the oldest state was dropped
    assert len(h.redo(s[1]).data) == 2


def test_qc_compare_is_evaluate_plus_masks(tmp_path):
    rng = np.random.default_rng(1)
    truth = rng.uniform(0, 100, (40, 2))
    pred = np.vstack([truth[:30] + rng.normal(0, 0.3, (30, 2)), rng.uniform(0, 100, (5, 2))])
    scores, tp, found = A.qc_compare(pred, truth, 1.5)
    assert scores == evaluate(pred, truth, 1.5)
    assert tp.sum() == scores["tp"] and (~found).sum() == scores["fn"] and (~tp).sum() == scores["fp"]
    with pytest.raises(SpotDetectError, match="same image"):
        A.qc_compare(np.zeros((2, 3)), truth, 1.0)
    out = A.write_qc_table([{"image": "a", **scores, "radius": 1.5, "predictions": "p", "truth": "t"}],
                           tmp_path / "qc.csv")
    df = pd.read_csv(out)
    assert list(df.columns) == A.QC_COLUMNS and df.loc[0, "tp"] == scores["tp"]
