"""The napari side of issue 15: a panel closed mid-run, and TIFFs opened with the axes their metadata gives."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_spotdetect._reader import get_image_reader, get_reader

# waits end as soon as their condition holds; a loaded 2-core machine may need minutes, never a failure
WAIT_MS = 600_000


def test_closing_the_detect_panel_mid_run_cancels_and_disconnects(detect_widget, qtbot, tiny_model):
    viewer, widget = detect_widget
    viewer.add_image(np.random.default_rng(0).normal(100, 10, (1024, 1024)).astype(np.float32), name="big")
    tiny_model.delay = 0.3
    widget.set_model(tiny_model)
    worker = widget.run()
    qtbot.waitUntil(lambda: tiny_model.calls >= 1, timeout=WAIT_MS)
    viewer.window.remove_dock_widget(widget.native)  # what the dock's close button does
    assert worker.abort_requested and not widget.running
    qtbot.waitUntil(lambda: not worker.is_running, timeout=WAIT_MS)
    qtbot.wait(50)  # let any queued signal be delivered: none may reach the closed panel
    assert [lay.name for lay in viewer.layers] == ["big"]
    assert tiny_model.calls < 25  # 25 tiles in all: it stopped within a batch
    # the closed panel no longer listens to the viewer: removing and adding layers touches nothing of it
    widget.native.deleteLater()
    qtbot.wait(20)
    viewer.add_image(np.zeros((32, 32), np.float32), name="after")
    viewer.layers.remove("big")
    assert [lay.name for lay in viewer.layers] == ["after"]


def test_tiff_reader_gives_layers_the_file_axes_and_pixel_size(make_napari_viewer, tmp_path):
    stack = np.random.default_rng(1).integers(0, 500, (5, 64, 64), dtype=np.uint16)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, imagej=True, resolution=(1 / 0.1, 1 / 0.1),
                     metadata={"axes": "ZYX", "spacing": 0.3, "unit": "um"})
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin="napari-spotdetect")
    assert tuple(layer.axis_labels) == ("z", "y", "x")
    np.testing.assert_allclose(layer.scale, [0.3, 0.1, 0.1])
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Detect spots")
    widget.set_image(layer)
    assert widget._choices.axes.value == "zyx"


def test_tiff_reader_splits_channels_so_dapi_is_its_own_layer(make_napari_viewer, tmp_path):
    two = np.stack([np.full((48, 48), 1000, np.uint16), np.zeros((48, 48), np.uint16)])
    path = tmp_path / "dapi_fish.tif"
    tifffile.imwrite(path, two, imagej=True, metadata={"axes": "CYX"})
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin="napari-spotdetect")
    assert [lay.data.shape for lay in layers] == [(48, 48), (48, 48)]
    assert layers[0].data.max() == 1000 and layers[1].data.max() == 0


def test_image_reader_opens_plain_tiffs_without_inventing_axes(make_napari_viewer, tmp_path):
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((5, 16, 16), np.uint16))  # axes unknown ('QYX')
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(tmp_path / "plain.tif"), plugin="napari-spotdetect")
    assert layer.data.shape == (5, 16, 16) and "spotdetect_axes" not in layer.metadata
    (tmp_path / "bad.tif").write_bytes(b"II*\x00" + b"\xff" * 40)
    assert get_image_reader(str(tmp_path / "bad.tif")) is None  # napari then says no reader could open it
    assert get_image_reader(str(tmp_path / "nothing.tif")) is None


@pytest.mark.parametrize("doc", ["[1, 2]", "3", "\"text\"", "null"])
def test_csv_reader_ignores_provenance_that_is_not_an_object(tmp_path, doc):
    (tmp_path / "s.csv").write_text("y,x\n1,2\n")
    (tmp_path / "s.provenance.json").write_text(doc)
    [(data, kw, kind)] = get_reader(str(tmp_path / "s.csv"))(str(tmp_path / "s.csv"))
    assert kind == "points" and data.tolist() == [[1.0, 2.0]] and "spotdetect" not in kw["metadata"]
