"""Manifest, sample data and the worker generator, checked without a viewer where none is needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from npe2 import PluginManifest
from npe2.manifest.utils import import_python_name

import napari_spotdetect
from napari_spotdetect import _sample_data
from napari_spotdetect.core.detection.detect import Progress
from napari_spotdetect.core.detection.options import DetectOptions
from napari_spotdetect.widgets.layers import guess_layer_axes, map_in_layer_order, points_from_spots
from napari_spotdetect.widgets.progress_text import plane_messages
from napari_spotdetect.widgets.workers import detection_steps, run_sync

MANIFEST = Path(napari_spotdetect.__file__).with_name("napari.yaml")


def test_manifest_is_valid_and_every_command_imports():
    manifest = PluginManifest.from_file(MANIFEST)
    assert manifest.name == "napari-spotdetect"
    ids = {c.id for c in manifest.contributions.commands}
    assert {"napari-spotdetect.detect_widget", "napari-spotdetect.get_reader",
            "napari-spotdetect.write_points"} <= ids
    for cmd in manifest.contributions.commands:
        assert callable(import_python_name(cmd.python_name)), cmd.python_name


@pytest.mark.parametrize("make", [_sample_data.smfish_2d, _sample_data.smfish_stack])
def test_samples_have_true_spots_on_bright_pixels(make):
    (img, img_kw, img_kind), (pts, pts_kw, pts_kind) = make()
    assert (img_kind, pts_kind) == ("image", "points") and img.dtype == np.float32
    assert pts.shape[1] == img.ndim and len(pts) > 50
    at_spots = img[tuple(np.rint(pts).astype(int).T)]
    assert np.median(at_spots) > np.percentile(img, 90)


def test_worker_steps_run_synchronously_and_cache_the_model(tiny_model):
    img = np.random.default_rng(0).normal(100, 10, (3, 64, 64)).astype(np.float32)
    cache = {}
    msgs, res = run_sync(plane_messages(
        detection_steps(img, tiny_model, DetectOptions(axes="zyx"), model_cache=cache)))
    assert all(isinstance(m, Progress) for m in msgs)
    assert msgs[-1].message == "plane 3 of 3 (z=2) · tile 3 of 3"
    assert [(m.plane, m.where) for m in msgs if m.plane is not None] == [(k, {"z": k}) for k in range(3)]
    assert res.model is tiny_model and res.detections.axes == "zyx"
    msgs2, _ = run_sync(detection_steps(img, tiny_model, DetectOptions(axes="zyx"), model_cache=cache))
    assert not any("loading" in m.message for m in msgs2)  # second run reuses the loaded model


def test_layer_conversions_follow_the_layer_axis_order():
    import pandas as pd

    spots = pd.DataFrame({"c": [1.0], "z": [2.0], "y": [3.0], "x": [4.0], "score": [0.9]})
    coords, feats = points_from_spots(spots, "zyxc")
    np.testing.assert_array_equal(coords, [[2, 3, 4, 1]])
    assert list(feats.columns) == ["score"]
    arr = np.zeros((2, 5, 6, 7))  # canonical czyx
    out, dims = map_in_layer_order(arr, "czyx", "zyxc")
    assert out.shape == (5, 6, 7, 2) and dims == [0, 1, 2, 3]
    out, dims = map_in_layer_order(np.zeros((5, 6, 7)), "czyx", "zyxc")  # channels fed together
    assert out.shape == (5, 6, 7) and dims == [0, 1, 2]
    assert guess_layer_axes(4, ("T", "Z", "Y", "X")) == "tzyx"
    assert guess_layer_axes(4, ("-4", "-3", "-2", "-1")) == "tzyx"
