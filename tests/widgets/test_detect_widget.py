"""The detection widget in a real (headless) napari viewer, driven the way a user drives it."""

from __future__ import annotations

import numpy as np
import pytest

from napari_spotdetect import layer_keys as K
from napari_spotdetect.core import detect
from napari_spotdetect.widgets.detect_widget import DetectWidget

# waits end as soon as their condition holds; a loaded 2-core machine may need minutes, never a failure
WAIT_MS = 600_000


def _spots_layer(viewer):
    found = [lay for lay in viewer.layers if K.PROVENANCE in lay.metadata]
    assert len(found) == 1, [lay.name for lay in viewer.layers]
    return found[0]


def _score_map(viewer):
    found = [lay for lay in viewer.layers if lay.metadata.get(K.SCORE_MAP) == "labels"]
    assert len(found) == 1, [lay.name for lay in viewer.layers]
    return found[0]


@pytest.mark.slow
def test_detect_2d_sample_gives_aligned_scored_points(detect_widget, qtbot, tiny_model, run_and_wait):
    viewer, widget = detect_widget
    viewer.open_sample("napari-spotdetect", "smfish_2d")
    image = viewer.layers["smFISH (synthetic)"]
    image.scale, image.translate = (0.5, 0.25), (10.0, -3.0)
    widget.set_image(image)
    widget.set_model(tiny_model)
    assert widget._choices.axes.value == "yx"
    assert not widget._choices.maps.value  # the score map is off by default: it hides the spots
    widget._choices.maps.value = True
    widget._choices.threads.value = 1  # as the reference detect() below runs: the same float32 sums

    run_and_wait(widget)

    points = _spots_layer(viewer)
    expected = detect(image.data, tiny_model).spots
    assert len(points.data) == len(expected) > 0
    np.testing.assert_allclose(points.data, expected[["y", "x"]].to_numpy())
    assert {"score", "intensity", "source", "model"} <= set(points.features.columns)
    assert (points.features["source"] == "predicted").all()
    assert (points.features["score"] > 0.5).all()
    assert points.border_color_mode == "colormap"
    np.testing.assert_allclose(points.scale, image.scale)
    np.testing.assert_allclose(points.translate, image.translate)
    prov = points.metadata[K.PROVENANCE]
    assert prov["model"] == "tiny-random" and prov["threshold"] == 0.5 and prov["layer_axes"] == "yx"
    assert "tiling" in prov and prov["device"] == "cpu"
    assert points.name == "spots: smFISH (synthetic) (tiny-random)"  # role first, then image and model
    score_map = _score_map(viewer)
    assert score_map.name.startswith("labels map: smFISH (synthetic)")
    assert score_map.data.shape == image.data.shape
    np.testing.assert_allclose(score_map.scale, image.scale)
    np.testing.assert_allclose(score_map.translate, image.translate)
    assert "dy (model map)" not in " ".join(lay.name for lay in viewer.layers)
    assert widget._threshold.enabled and "Done:" in widget._status.value


@pytest.mark.slow
def test_threshold_moves_spots_without_running_the_network(detect_widget, qtbot, tiny_model, run_and_wait):
    viewer, widget = detect_widget
    viewer.open_sample("napari-spotdetect", "smfish_2d")
    widget.set_model(tiny_model)
    run_and_wait(widget)
    points = _spots_layer(viewer)
    n_default, calls = len(points.data), tiny_model.calls
    assert calls > 0

    widget._threshold.value = 0.2  # as the slider does; the update is debounced
    qtbot.waitUntil(lambda: len(points.data) != n_default, timeout=WAIT_MS)
    assert len(points.data) > n_default
    assert len(points.features) == len(points.data)
    assert (points.features["score"] > 0.2).all()
    assert points.metadata[K.PROVENANCE]["threshold"] == pytest.approx(0.2)
    assert points.metadata[K.DETECTIONS].threshold == pytest.approx(0.2)
    assert str(len(points.data)) in widget._count.value

    widget._tuned.native.click()
    assert len(points.data) == n_default
    assert widget._threshold.value == pytest.approx(0.5)
    assert tiny_model.calls == calls  # never ran the network again


def test_cancel_stops_early_and_adds_no_layer(detect_widget, qtbot, tiny_model, run_and_wait):
    viewer, widget = detect_widget
    viewer.add_image(np.random.default_rng(0).normal(100, 10, (1024, 1024)).astype(np.float32), name="big")
    tiny_model.delay = 0.3
    widget.set_model(tiny_model)
    widget._choices.maps.value = True
    worker = widget.run()
    assert widget.run() is None and "running" in widget.problem()  # one run at a time (the folder loop asks too)
    qtbot.waitUntil(lambda: tiny_model.calls >= 1, timeout=WAIT_MS)
    widget._cancel.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=WAIT_MS)
    assert [lay.name for lay in viewer.layers] == ["big"]
    assert tiny_model.calls < 25  # 25 tiles in all: it stopped within a tile batch
    assert worker.abort_requested
    assert "no spots were added" in widget._status.value
    assert widget._run.enabled and not widget._cancel.enabled


@pytest.mark.slow
def test_zstack_detected_plane_by_plane_with_scale(detect_widget, qtbot, tiny_model, run_and_wait):
    viewer, widget = detect_widget
    viewer.open_sample("napari-spotdetect", "smfish_stack")
    image = viewer.layers["smFISH stack (synthetic)"]
    image.scale = (3.0, 0.5, 0.5)
    widget.set_model(tiny_model)
    widget._choices.maps.value = True
    assert widget._choices.axes.value == "zyx"
    run_and_wait(widget)
    points = _spots_layer(viewer)
    assert points.ndim == 3 and len(points.data) > 0
    assert points.data[:, 0].min() >= 0 and points.data[:, 0].max() <= image.data.shape[0] - 1
    np.testing.assert_allclose(points.scale, image.scale)
    assert str(points.projection_mode) == "rescale_linear"
    # rings also show, smaller, two planes above and below; the image still shows its one plane
    assert viewer.dims.thickness[0] == pytest.approx(4 * 3.0) and str(image.projection_mode) == "none"
    score_map = _score_map(viewer)
    assert score_map.data.shape == image.data.shape
    np.testing.assert_allclose(score_map.scale, image.scale)
    calls = tiny_model.calls
    assert len(points.data) != widget.apply_threshold(0.1)  # stack spots are merged again, from the maps
    assert tiny_model.calls == calls


def test_axes_in_layer_order_and_user_override(detect_widget, qtbot, tiny_model, run_and_wait):
    viewer, widget = detect_widget
    rng = np.random.default_rng(1)
    data = rng.normal(100, 10, (96, 80, 2)).astype(np.float32)
    layer = viewer.add_image(data, name="two channels last", rgb=False)
    widget.set_image(layer)
    widget.set_model(tiny_model)
    assert widget._choices.axes.value == "zyx"  # a 3-D layer without labels is taken as a z-stack...
    widget._choices.axes.value = "yxq"
    assert not widget._run.enabled and "not valid" in widget._status.value
    widget._choices.axes.value = "yxc"  # ...until the user says the last axis holds channels
    assert widget._run.enabled
    widget._choices.maps.value = True
    widget._choices.threads.value = 1  # as the reference detect() below runs: the same float32 sums
    run_and_wait(widget)
    points = _spots_layer(viewer)
    for ch in (0, 1):
        ref = detect(data[..., ch], tiny_model).spots
        mine = points.data[points.data[:, 2] == ch]
        np.testing.assert_allclose(mine[:, :2], ref[["y", "x"]].to_numpy())
    assert _score_map(viewer).data.shape == data.shape


def test_axis_labels_and_rgb(detect_widget):
    viewer, widget = detect_widget
    labelled = viewer.add_image(np.zeros((3, 32, 32), np.float32), axis_labels=("time", "row", "column"))
    widget.set_image(labelled)
    assert widget._choices.axes.value == "tyx"
    rgb = viewer.add_image(np.zeros((32, 32, 3), np.uint8), rgb=True)
    widget.set_image(rgb)
    assert not widget._run.enabled
    assert "RGB" in widget.problem() and widget.run() is None


def test_model_choice_is_remembered_only_once_it_loaded_and_errors_are_shown(detect_widget, run_and_wait,
                                                                           tmp_path, tiny_model):
    from napari_spotdetect.core.weights.native import save_model
    from napari_spotdetect.widgets.settings import load_settings

    viewer, widget = detect_widget
    viewer.add_image(np.zeros((64, 64), np.float32))
    bad = tmp_path / "not_a_model.pt"
    bad.write_bytes(b"")  # e.g. an interrupted download
    widget._choices.model_kind.value = "file"
    widget._choices.model_path.value = bad
    assert not widget._choices.model_path.native.isHidden() and widget._run.enabled
    run_and_wait(widget)
    assert "is empty" in widget._status.value and "Fix:" in widget._status.value
    assert not [lay for lay in viewer.layers if K.PROVENANCE in lay.metadata]
    # a model that failed to load is not what the next launch should start with
    assert DetectWidget(viewer)._choices.model_kind.value == "default" and load_settings("detect") == {}

    good = save_model(tiny_model, tmp_path / "good.pt")
    widget._choices.model_path.value = good
    widget._choices.min_distance.value = 3
    run_and_wait(widget)
    assert [lay for lay in viewer.layers if K.PROVENANCE in lay.metadata]
    again = DetectWidget(viewer)  # a new session reads the settings file
    assert again._choices.model_kind.value == "file" and str(again._choices.model_path.value) == str(good)
    assert again._choices.min_distance.value == 3
    again._reset.native.click()
    assert again._choices.to_remember()["model_path"] == ""  # the bundled model is not stored as path "."
    assert again._choices.model_kind.value == "default" and again._choices.model_path.native.isHidden()
    assert DetectWidget(viewer)._choices.model_kind.value == "default"


def test_missing_default_model_is_explained(detect_widget, monkeypatch, tmp_path):
    import napari_spotdetect.widgets.detect_choices as choices

    monkeypatch.setattr(choices, "bundled_path", lambda name: tmp_path / "absent.pt")  # an install without it
    viewer, widget = detect_widget
    viewer.add_image(np.zeros((64, 64), np.float32))
    widget._choices.model_kind.value = "default"
    assert not widget._run.enabled
    assert "bundled default model is not installed" in widget._status.value


@pytest.mark.slow
def test_first_launch_detects_the_sample_with_the_bundled_model(detect_widget, run_and_wait):
    """Offline first use: sample data, default model, Run; the spots are the true ones (within 3 px: the sample
    holds spots near the noise floor and specks, as real images do, so a few are missed or extra)."""
    from napari_spotdetect.core.groundtruth.metrics import match_spots

    viewer, widget = detect_widget
    viewer.open_sample("napari-spotdetect", "smfish_2d")
    widget._choices.model_kind.value = "default"
    widget._choices.device.value = "cpu"
    run_and_wait(widget, timeout=WAIT_MS)
    spots = next(lay for lay in viewer.layers if "spotdetect" in lay.metadata)
    assert spots.metadata["spotdetect"]["model"] == "default"
    truth = viewer.layers["true spots"].data
    assert match_spots(spots.data, truth, 3.0).f1 > 0.85


@pytest.mark.slow
def test_augmentation_box_averages_eight_views(detect_widget, tiny_model, run_and_wait):
    viewer, widget = detect_widget
    viewer.open_sample("napari-spotdetect", "smfish_2d")
    image = viewer.layers["smFISH (synthetic)"]
    widget.set_image(image)
    widget.set_model(tiny_model)
    widget._choices.augment.value = True
    widget._choices.maps.value = True
    widget._choices.threads.value = 1  # as the reference detect() below runs: the same float32 sums
    passes = []
    hook = tiny_model.net.fpn.register_forward_pre_hook(lambda *_: passes.append(1))
    run_and_wait(widget)
    in_widget, passes[:] = len(passes), []
    points = _spots_layer(viewer)
    assert points.metadata[K.PROVENANCE]["test_time_augmentation"] is True
    plain = detect(image.data, tiny_model, keep_maps=True)
    hook.remove()
    assert in_widget == 8 * len(passes) > 0  # eight network passes per tile batch
    expected = detect(image.data, tiny_model, augment=True).spots
    np.testing.assert_allclose(points.data, expected[["y", "x"]].to_numpy())
    assert not np.array_equal(plain.maps["labels"], points.metadata[K.DETECTIONS].maps["labels"])
    widget._reset.native.click()
    assert widget._choices.augment.value is False


@pytest.mark.slow
def test_multiscale_dask_layer_is_detected_lazily_from_full_resolution(detect_widget, qtbot, tiny_model,
                                                                        run_and_wait):
    """An OME-Zarr-like pyramid of dask arrays: spots come from level 0, maps stay on disk, shown lazily."""
    import dask.array as da

    from napari_spotdetect.core.training.synthetic import synthetic_image

    viewer, widget = detect_widget
    full = synthetic_image((300, 260), n_spots=40, seed=4)[0]
    pyramid = [da.from_array(full, chunks=(64, 64)), da.from_array(full[::2, ::2], chunks=(64, 64))]
    image = viewer.add_image(pyramid, multiscale=True, name="pyramid")
    widget.set_image(image)
    widget.set_model(tiny_model)
    widget._choices.maps.value = True
    widget._choices.threads.value = 1  # as the reference detect() below runs: the same float32 sums
    run_and_wait(widget)
    assert widget._status.value.startswith("Done:"), widget._status.value
    points = _spots_layer(viewer)
    expected = detect(full, tiny_model).spots
    assert len(points.data) == len(expected) > 0
    np.testing.assert_allclose(points.data, expected[["y", "x"]].to_numpy())
    score_map = next(lay for lay in viewer.layers if K.SCORE_MAP in lay.metadata)
    assert isinstance(score_map.data, da.Array) and score_map.data.shape == full.shape
    ref = detect(full, tiny_model, keep_maps=True).maps["labels"]
    np.testing.assert_array_equal(np.asarray(score_map.data), ref)
    widget._threshold.value = 0.3  # re-thresholding works on the compact candidates
    qtbot.waitUntil(lambda: len(points.data) != len(expected), timeout=WAIT_MS)
    assert (points.features["score"] > 0.3).all()


def _candidates(viewer):

    lay = [lay for lay in viewer.layers if K.DETECTIONS in lay.metadata][-1]
    return lay.metadata[K.DETECTIONS].candidates


@pytest.mark.slow
def test_normalisation_percentiles_and_min_distance_change_the_detection(detect_widget, run_and_wait):
    """The controls napari-spotiflow and stardist-napari users expect reach the engine."""
    import torch

    from napari_spotdetect.core.models.base import ModelInfo
    from napari_spotdetect.core.models.piscis import PERCENTILES, PiscisModel
    from napari_spotdetect.core.models.piscis_net import PiscisConfig, PiscisNet

    torch.manual_seed(0)
    net = PiscisNet(PiscisConfig(widths=(8, 16, 32, 64), depths=(1, 1, 1, 1)))
    model = PiscisModel(net, ModelInfo(name="tiny-percentile", arch="piscis"), adjustment="percentile", device="cpu")
    viewer, widget = detect_widget
    viewer.open_sample("napari-spotdetect", "smfish_2d")
    widget.set_model(model)
    form = widget._choices
    assert (form.p_low.value, form.p_high.value) == PERCENTILES and form.min_distance.value == 1
    run_and_wait(widget)
    first = _candidates(viewer)
    form.p_low.value, form.p_high.value = 20.0, 99.99
    run_and_wait(widget)
    other = _candidates(viewer)
    assert model.percentiles == PERCENTILES  # the model in use keeps its own
    provenance = [lay for lay in viewer.layers if K.PROVENANCE in lay.metadata][-1].metadata[K.PROVENANCE]
    assert provenance["normalization"] == {"kind": "percentile", "percentiles": [20.0, 99.99],
                                           "bright_regions": "left out of the high percentile"}
    assert len(first) != len(other) or not np.allclose(first["score"].to_numpy(), other["score"].to_numpy())
    form.p_low.value, form.p_high.value = PERCENTILES
    run_and_wait(widget)
    again = _candidates(viewer)
    np.testing.assert_allclose(again["score"].to_numpy(), first["score"].to_numpy())
    form.min_distance.value = 6
    run_and_wait(widget)
    spread = _candidates(viewer)
    assert 0 < len(spread) < len(first)  # close peaks merged into one


def test_remembered_settings_that_are_not_valid_fall_back_to_the_defaults(make_napari_viewer):
    """A hand-edited or old settings file never breaks the panel: what is not valid shows its default."""
    from napari_spotdetect.core.models.piscis import PERCENTILES
    from napari_spotdetect.widgets.settings import save_settings

    save_settings("detect", {"model_kind": "gone", "percentiles": [99.0, 10.0], "min_distance": "far",
                             "threads": -3, "speed": "ludicrous", "device": "tpu", "tile_size": 64})
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Detect spots")
    form = widget._choices
    assert (form.p_low.value, form.p_high.value) == PERCENTILES
    assert form.model_kind.value == "default" and form.min_distance.value == 1 and form.threads.value == 0
    assert form.speed.value == "exact" and form.device.value == "auto" and form.tile.value == 64


def test_speed_choice_reaches_the_engine_and_is_remembered(detect_widget, tiny_model, run_and_wait):
    viewer, widget = detect_widget
    viewer.add_image(np.random.default_rng(0).normal(100, 10, (300, 300)).astype(np.float32), name="noise")
    widget.set_model(tiny_model)
    assert widget._choices.speed.value == "exact"
    widget._choices.speed.value = "fast"
    run_and_wait(widget)
    provenance = [lay for lay in viewer.layers if K.PROVENANCE in lay.metadata][-1].metadata[K.PROVENANCE]
    assert provenance["speed"] == "fast"
    widget._choices.model_kind.value = "default"  # what is saved after a bundled or file model has run
    assert widget._choices.to_remember()["speed"] == "fast"


def test_the_panel_is_never_cut_off_at_the_dock_edge(detect_widget, qtbot, tiny_model, run_and_wait):
    """After a run on a layer with a long name (long choices, count and status texts), the dock cannot be
    narrower than the controls need: there is no horizontal scroll bar, so anything wider would be cut off."""
    from qtpy.QtWidgets import QScrollArea

    viewer, widget = detect_widget
    viewer.add_image(np.random.default_rng(0).normal(100, 5, (96, 96)).astype(np.float32),
                     name="a very long layer name from a microscope's file naming scheme, plate 3 well B7 field 12")
    widget.set_model(tiny_model)
    run_and_wait(widget)
    widget._threshold.value = 0.3
    widget.apply_threshold()
    qtbot.wait(50)  # layout requests are delivered
    scroll = widget.native.findChild(QScrollArea)
    assert scroll.minimumWidth() >= scroll.widget().minimumSizeHint().width()
    assert scroll.widget().minimumSizeHint().width() < 400  # long names are elided or wrapped, not widening
    assert widget._count.value


def test_equal_percentiles_stop_run_with_a_message_instead_of_failing_in_it(detect_widget):
    """Both percentile boxes at 50 (each box allows it) used to raise inside Run's handler."""
    viewer, widget = detect_widget
    viewer.open_sample("napari-spotdetect", "smfish_2d")
    form = widget._choices
    assert widget._run.enabled
    form.p_low.value = form.p_high.value = 50.0
    assert not widget._run.enabled
    assert "percentiles" in widget._status.value.lower()
    form.p_low.value = 1.0
    assert widget._run.enabled and widget.problem() is None
