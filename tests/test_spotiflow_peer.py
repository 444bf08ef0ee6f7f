"""The Spotiflow peer benchmark's own logic (benchmarks/spotiflow_peer.py), without Spotiflow: the training
data it exports keeps y/x order and pixel centres, holds no ``val`` image, and its predictions read back
(3-D planes merged) or fail with the command that makes them."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_spotdetect.core.training.synthetic import synthetic_image

from .conftest import ROOT, SHARED, need_shared

sys.path.insert(0, str(ROOT / "benchmarks"))
import spotiflow_peer as sp


def test_exported_pair_reads_back_as_y_x_at_pixel_centres(tmp_path):
    # a wide image: swapped axes would put spots outside it or on dark pixels
    img, pts = synthetic_image((40, 120), n_spots=6, seed=5, amplitude=(3000.0, 4000.0), read_noise=1.0)
    sp.write_pair(tmp_path, "a", img, pts)
    df = pd.read_csv(tmp_path / "a.csv")  # Spotiflow's read_coords_csv takes the ("y", "x") columns, in that order
    assert list(df.columns) == ["y", "x"]
    back = df[["y", "x"]].to_numpy()
    np.testing.assert_allclose(back, pts, atol=1e-4)
    stored = tifffile.imread(tmp_path / "a.tif")
    np.testing.assert_array_equal(stored, img)
    for y, x in back:  # pixel img[r, c] is centred on (y=r, x=c): each spot's light is centred on its row
        r, c = int(round(y)), int(round(x))
        win = stored[r - 2:r + 3, c - 2:c + 3].astype(np.float64)
        win = np.clip(win - np.median(stored), 0, None)
        dy, dx = np.mgrid[-2:3, -2:3]
        assert np.hypot((win * dy).sum() / win.sum() + r - y, (win * dx).sum() / win.sum() + c - x) < 0.35


@pytest.mark.slow
def test_export_is_the_bundled_models_training_data_and_no_val_image(tmp_path):
    real = need_shared(SHARED / "data" / "real")
    manifest = sp.export(tmp_path, real, tiny=True)
    card = sp.bundled_training_data()
    held = {n.replace("/", "_") for n in card["real"]["held_out_for_validation"]}
    index = pd.read_csv(real / "index.csv")
    val_stems = set(index.loc[index.split == "val", "stem"])
    for which in ("train", "val"):
        names = sorted(p.stem for p in (tmp_path / which).glob("*.tif"))
        assert len(names) == manifest[which]["images"]
        reals = [n for n in names if n.startswith("real_")]
        assert not any(n.endswith("_" + v) for n in reals for v in val_stems)
        assert all((n[len("real_"):] in held) == (which == "val") for n in reals)
    assert manifest["real_repeat"] == card["real"]["repeat"]
    # one real training image round-trips to its annotation
    name = next(p.stem for p in (tmp_path / "train").glob("real_pia_spots_*.tif"))
    stem = name[len("real_pia_spots_"):]
    truth = pd.read_csv(real / "pia_spots" / "spots" / f"{stem}.csv")[["y", "x"]].to_numpy()
    np.testing.assert_allclose(pd.read_csv(tmp_path / "train" / f"{name}.csv")[["y", "x"]].to_numpy(), truth,
                               atol=1e-4)
    # the synthetic ones are our generator's images with the card's seed
    from napari_spotdetect.core.training.synthetic import synthetic_dataset

    img0, pts0 = synthetic_dataset(1, card["kind"], seed=card["seed"])[0]
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "train" / "synthetic_0000.tif"), img0)
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest


def test_plane_detections_of_one_spot_merge_and_distinct_spots_stay():
    coords = np.array([[2, 9.5, 10.0], [3, 10.0, 10.0], [4, 10.5, 10.0], [5, 11.0, 10.5],  # one spot, 4 planes
                       [3, 10.0, 16.0],  # another spot 6 px away
                       [8, 10.0, 10.0]])  # the same y/x three planes past the first spot's end: another spot
    scores = np.array([0.3, 0.6, 0.9, 0.5, 0.7, 0.4])
    c, s = sp.merge_planes(coords, scores)
    assert sorted(s.tolist()) == [0.4, 0.7, 0.9]
    np.testing.assert_array_equal(c[np.argmax(s)], [4, 10.5, 10.0])


def test_missing_predictions_name_the_command_that_makes_them(tmp_path):
    with pytest.raises(SystemExit, match="spotiflow_peer.py --work"):
        sp.spotiflow_candidates([], tmp_path)
