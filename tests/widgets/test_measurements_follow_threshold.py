"""Measurements survive the Detect panel's threshold and contrast-floor sliders (fit, cells, filters)."""

from __future__ import annotations

import numpy as np

from napari_spotdetect import layer_keys as K

# waits end as soon as their condition holds; a loaded 2-core machine may need minutes, never a failure
WAIT_MS = 600_000


def _dock(viewer, name):
    return viewer.window.add_plugin_dock_widget("napari-spotdetect", name)[1]


def _by_place(layer, column):
    return {tuple(np.round(p, 3)): v for p, v in zip(layer.data, layer.features[column])}


def test_fit_cells_and_filters_survive_threshold_and_floor_moves(detect_widget, detected_2d, qtbot):
    _viewer, detect = detect_widget
    viewer, image, spots, _truth = detected_2d
    measure = _dock(viewer, "Measure and count spots")
    measure.set_layer(spots)
    assert measure.image_layer.name == image.name
    measure.fit()
    qtbot.waitUntil(lambda: not measure.running, timeout=WAIT_MS)
    cells = np.zeros(image.data.shape, np.int32)
    cells[:, :256], cells[:, 256:] = 1, 2
    measure.set_labels(viewer.add_labels(cells, name="cells"))
    measure.count()
    assert {"sigma", "snr", "cell"} <= set(spots.features.columns)
    sigma, cell = _by_place(spots, "sigma"), _by_place(spots, "cell")

    filters = _dock(viewer, "Filter spots by feature")
    filters.set_layer(spots)
    filters.set_feature("snr")
    snr_cut = float(np.nanmedian(spots.features["snr"]))
    filters.set_cut(snr_cut, None)
    filters.apply()
    assert 0 < len(spots.data) < len(sigma)

    detect._threshold.value = 0.7  # as a user drags it: the layer follows when the slider pauses
    qtbot.waitUntil(lambda: spots.metadata[K.PROVENANCE]["threshold"] == 0.7
                    and len(filters.filters) == 1 and (spots.features["score"] >= 0.7).all(), timeout=WAIT_MS)
    qtbot.wait(50)  # the filter panel follows the layer in the next event-loop turn
    f = spots.features
    assert len(f) > 0 and {"sigma", "snr", "cell", "compartment"} <= set(f.columns)
    assert (f["snr"] >= snr_cut).all() and (f["score"] >= 0.7).all()  # the SNR filter still holds
    assert filters.filters == [{"feature": "snr", "min": snr_cut, "max": None}]
    for p, s, c in zip(spots.data, f["sigma"], f["cell"]):  # every value still belongs to its own spot
        assert s == sigma[tuple(np.round(p, 3))] and c == cell[tuple(np.round(p, 3))]
    assert "gaussian_fit" in spots.metadata[K.PROVENANCE] and "cells" in spots.metadata[K.PROVENANCE]

    detect._floor.value = 0.1  # the floor slider gives a new set too: measurements and filters stay
    qtbot.waitUntil(lambda: spots.metadata[K.PROVENANCE].get("contrast_floor") == 0.1, timeout=WAIT_MS)
    qtbot.wait(50)
    assert "sigma" in spots.features and (spots.features["snr"] >= snr_cut).all()
    assert filters.filters == [{"feature": "snr", "min": snr_cut, "max": None}]

    detect._floor.value = 0.0
    detect._threshold.value = 0.5  # spots come back: measured ones keep their values, the others are unmeasured
    qtbot.waitUntil(lambda: spots.metadata[K.PROVENANCE]["threshold"] == 0.5, timeout=WAIT_MS)
    qtbot.wait(50)
    back = spots.features
    assert back["snr"].isna().any() and "not measured" in detect._count.value
    assert spots.metadata[K.PROVENANCE]["n_unmeasured"] == int(back["snr"].isna().sum())
    measured = back["snr"].notna().to_numpy()
    assert (back["snr"][measured] >= snr_cut).all()  # unmeasured spots are shown, measured ones still filtered
