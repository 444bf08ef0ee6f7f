"""Issue 23 #13: an image with both channels and z (czyx) detected through the Detect panel, and an OME-TIFF
with C > 1 and Z > 1 opened through the plugin's reader; before, every such image failed after detection with
"Grouper for 'c' not 1-dimensional"."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_spotdetect import detect


def _stack():
    rng = np.random.default_rng(0)
    img = rng.normal(100, 5, (2, 3, 64, 64)).astype(np.float32)
    img[0, 1, 19:22, 19:22] += 400
    img[1, 1, 39:42, 43:46] += 400
    return img


@pytest.mark.slow
def test_czyx_layer_through_the_detect_panel(detect_widget, tiny_model, run_and_wait):
    viewer, widget = detect_widget
    data = _stack()
    layer = viewer.add_image(data, name="two channels, three planes")
    widget.set_image(layer)
    widget.set_model(tiny_model)
    widget._choices.axes.value = "czyx"
    assert widget._run.enabled, widget._status.value
    run_and_wait(widget)
    assert "rror" not in widget._status.value, widget._status.value
    widget.apply_threshold(0.05)
    points = next(lay for lay in viewer.layers if "spotdetect" in lay.metadata)
    ref = detect(data, tiny_model, 0.05, axes="czyx").spots
    assert points.ndim == 4 and len(points.data) == len(ref) > 0
    np.testing.assert_allclose(points.data, ref[["c", "z", "y", "x"]].to_numpy(), atol=1e-5)


def test_ome_tiff_with_channels_and_z_opens_and_detects(detect_widget, tiny_model, run_and_wait, tmp_path):
    viewer, widget = detect_widget
    data = _stack()
    tifffile.imwrite(tmp_path / "cz.ome.tif", data, ome=True, metadata={"axes": "CZYX"})
    layers = viewer.open(tmp_path / "cz.ome.tif", plugin="napari-spotdetect")
    assert [lay.name for lay in layers] == ["cz.ome c0", "cz.ome c1"]
    widget.set_image(layers[1])
    widget.set_model(tiny_model)
    assert widget._choices.axes.value == "zyx"
    run_and_wait(widget)
    assert "rror" not in widget._status.value, widget._status.value
    widget.apply_threshold(0.05)
    points = next(lay for lay in viewer.layers if "spotdetect" in lay.metadata)
    ref = detect(data[1], tiny_model, 0.05, axes="zyx").spots
    np.testing.assert_allclose(points.data, ref[["z", "y", "x"]].to_numpy(), atol=1e-5)
