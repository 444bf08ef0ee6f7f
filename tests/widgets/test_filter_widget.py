"""Feature filters driven in napari: a cut on the histogram hides spots live and is recorded."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from napari_spotdetect import layer_keys as K

# waits end as soon as their condition holds; a loaded 2-core machine may need minutes, never a failure
WAIT_MS = 600_000


def _open(viewer):
    _dock, w = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Filter spots by feature")
    return w


def test_cuts_on_two_features_hide_and_bring_back_spots(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    n = 200
    feats = pd.DataFrame({"score": rng.uniform(0, 1, n), "snr": rng.uniform(0, 20, n), "source": "predicted"})
    data = rng.uniform(0, 100, (n, 2))
    layer = viewer.add_points(data, features=feats, name="spots", metadata={K.PROVENANCE: {"threshold": 0.5}})
    w = _open(viewer)
    w.set_layer(layer)
    assert set(w.feature_choices) == {"score", "snr"}
    w.set_feature("snr")
    assert w.histogram_counts.sum() == n
    w.set_cut(5.0, None)  # drag the lower cut; the layer updates when the slider pauses
    qtbot.waitUntil(lambda: len(layer.data) == int((feats.snr >= 5).sum()), timeout=WAIT_MS)
    assert (layer.features["snr"] >= 5).all()
    assert layer.metadata[K.PROVENANCE]["feature_filters"] == [{"feature": "snr", "min": 5.0, "max": None}]
    assert layer.metadata[K.PROVENANCE]["threshold"] == 0.5  # the rest of the provenance is untouched
    np.testing.assert_allclose(layer.data, data[feats.snr >= 5])  # spots and features stay paired

    w.add_filter()
    w.set_feature("score")
    w.set_cut(None, 0.6)
    w.apply()
    keep = (feats.snr >= 5) & (feats.score <= 0.6)
    assert len(layer.data) == int(keep.sum()) and f"{int(keep.sum())} of {n}" in w.count_text
    assert {f["feature"] for f in layer.metadata[K.PROVENANCE]["feature_filters"]} == {"snr", "score"}

    w.set_feature("snr")  # back to the first feature: its cut is where the user left it
    assert w.cut[0] == 5.0
    w.set_cut(None, None)  # moving the cut back brings the spots back, without a detection
    w.apply()
    assert len(layer.data) == int((feats.score <= 0.6).sum())
    # a saved table says how it was filtered
    layer.save(str(tmp_path / "kept.csv"), plugin="napari-spotdetect")
    prov = json.loads((tmp_path / "kept.provenance.json").read_text())
    assert prov["feature_filters"] == layer.metadata[K.PROVENANCE]["feature_filters"] and prov["n_before_filters"] == n
    assert len(pd.read_csv(tmp_path / "kept.csv")) == len(layer.data)
    w.clear()
    assert len(layer.data) == n and layer.metadata[K.PROVENANCE]["feature_filters"] == []


@pytest.mark.slow
def test_filters_follow_a_rethreshold_from_the_detect_widget(detected_2d, qtbot):
    viewer, _image, spots, _truth = detected_2d
    det = next(w for w in viewer.window.dock_widgets.values() if hasattr(w, "apply_threshold"))
    dets = spots.metadata[K.DETECTIONS]
    lo = det._threshold.min
    n_all = det.apply_threshold(lo)
    assert n_all >= 8, "the test needs a detection with spots to filter"
    w = _open(viewer)
    w.set_layer(spots)
    w.set_feature("intensity")
    cut = float(np.median(spots.features["intensity"]))
    w.set_cut(cut, None)
    w.apply()
    assert (spots.features["intensity"] >= cut).all() and len(spots.data) < n_all
    # a new threshold in Detect spots: its spots are the new full set, and the cut applies to them
    t2 = float(np.quantile(dets.rethreshold(lo)["score"], 0.5))
    det.apply_threshold(t2)
    expected = dets.rethreshold(t2)
    qtbot.waitUntil(lambda: len(spots.metadata["spotdetect_filters"].data) == len(expected), timeout=WAIT_MS)
    assert len(spots.data) == int((expected["intensity"] >= cut).sum())
    assert spots.metadata[K.PROVENANCE]["threshold"] == t2
    assert spots.metadata[K.PROVENANCE]["feature_filters"] == [{"feature": "intensity", "min": cut, "max": None}]


def test_a_fit_made_while_filtered_joins_the_full_set(make_napari_viewer, qtbot):
    from tests.core.analysis.test_fit import draw, grid

    viewer = make_napari_viewer()
    truth = grid(5, 16, 10, seed=13)
    viewer.add_image(draw((90, 90), truth, 1.4, 2000.0, 100.0, seed=13).astype(np.float32), name="img")
    score = np.linspace(0, 1, len(truth))
    layer = viewer.add_points(np.rint(truth), name="img spots", features=pd.DataFrame({"score": score}),
                              metadata={K.PROVENANCE: {"image_layer": "img", "layer_axes": "yx"}})
    filt = _open(viewer)
    filt.set_layer(layer)
    filt.set_feature("score")
    filt.set_cut(0.5, None)
    filt.apply()
    n_shown = int((score >= 0.5).sum())
    assert len(layer.data) == n_shown
    _dock, meas = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Measure and count spots")
    meas.set_layer(layer)
    meas.fit()
    qtbot.waitUntil(lambda: not meas.running, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: "sigma" in filt.feature_choices, timeout=WAIT_MS)
    assert len(layer.data) == n_shown and layer.features["sigma"].notna().all()
    filt.set_feature("sigma")  # the score cut stays in force
    assert len(layer.data) == n_shown
    filt.clear()
    assert len(layer.data) == len(truth)
    sig = layer.features["sigma"].to_numpy()
    assert np.isnan(sig[score < 0.5]).all() and np.abs(sig[score >= 0.5] / 1.4 - 1).max() < 0.1


def test_filters_stay_with_the_layer_and_hand_edits_keep_hidden_spots_hidden(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    feats = pd.DataFrame({"snr": np.arange(10.0)})
    layer = viewer.add_points(np.arange(20.0).reshape(10, 2), features=feats, name="spots")
    dock, w = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Filter spots by feature")
    w.set_layer(layer)
    w.set_feature("snr")
    w.set_cut(4.0, None)
    w.apply()
    assert layer.features["snr"].tolist() == [4, 5, 6, 7, 8, 9]
    viewer.window.remove_dock_widget(dock)  # the user closes the panel, then deletes a shown spot by hand
    layer.selected_data = {0}
    layer.remove_selected()
    qtbot.waitUntil(lambda: len(layer.metadata["spotdetect_filters"].data) == 9, timeout=WAIT_MS)
    assert layer.features["snr"].tolist() == [5, 6, 7, 8, 9]
    w2 = _open(viewer)  # a new panel shows the filters in force
    w2.set_layer(layer)
    assert w2.filters == [{"feature": "snr", "min": 4.0, "max": None}]
    w2.clear()  # the hidden spots come back; the deleted one does not
    assert layer.features["snr"].tolist() == [0, 1, 2, 3, 5, 6, 7, 8, 9]
