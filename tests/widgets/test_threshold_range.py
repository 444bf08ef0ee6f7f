"""With the bundled model, the threshold slider does something on a real image and on the 2-D sample: scores
spread over the slider's range, so moving it from 0.05 to 0.95 changes the spot count substantially."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# waits end as soon as their condition holds; a loaded 2-core machine may need minutes, never a failure
WAIT_MS = 600_000


SHARED = Path(os.environ.get("SPOTDETECT_SHARED", Path(__file__).resolve().parents[2].parent / "shared"))


def need_shared(path: Path) -> Path:  # as tests/conftest.need_shared (this folder is not a package)
    if not path.exists():
        pytest.skip(f"reference material not found at {path} (a fresh clone without ../shared skips this test)")
    return path




def _counts(viewer, widget, run_and_wait):
    widget._choices.model_kind.value = "default"
    widget._choices.device.value = "cpu"
    run_and_wait(widget, timeout=WAIT_MS)
    return {t: widget.apply_threshold(t) for t in (0.05, 0.5, 0.95)}


@pytest.mark.slow
def test_slider_changes_the_count_on_a_real_image(detect_widget, run_and_wait):
    import tifffile

    root = need_shared(SHARED / "data" / "real" / "piscis_panels")
    viewer, widget = detect_widget
    viewer.add_image(np.asarray(tifffile.imread(root / "images" / "macrophages.tif")), name="macrophages")
    n = _counts(viewer, widget, run_and_wait)
    assert n[0.05] > n[0.5] > n[0.95] and n[0.05] >= 1.15 * n[0.95] and n[0.05] - n[0.95] >= 40, n


def test_slider_changes_the_count_on_the_2d_sample(detect_widget, run_and_wait):
    from napari_spotdetect.core.groundtruth.metrics import match_spots

    viewer, widget = detect_widget
    viewer.open_sample("napari-spotdetect", "smfish_2d")
    n = _counts(viewer, widget, run_and_wait)
    assert n[0.05] > n[0.5] > n[0.95] and n[0.05] >= 1.15 * n[0.95] and n[0.05] - n[0.95] >= 25, n
    # what the slider removes first is mostly not spots: the spots kept at 0.95 are more often true ones
    spots = next(lay for lay in viewer.layers if "spotdetect" in lay.metadata)
    truth = viewer.layers["true spots"].data
    precision = {}
    for t in (0.05, 0.95):
        widget.apply_threshold(t)
        precision[t] = match_spots(spots.data, truth, 3.0).precision
    assert precision[0.95] > precision[0.05], precision


def test_contrast_floor_slider_drops_the_texture_live(detect_widget, run_and_wait):
    """A user raises the contrast floor: the dim texture the network called goes, the bright spots stay, and
    "Model's own values" brings back the model's own floor."""
    from napari_spotdetect.core.detection.detect import detect
    from napari_spotdetect.core.groundtruth.metrics import match_spots
    from napari_spotdetect.core.training.synthetic import spots_in_texture

    def detect_count(img, model):
        return len(detect(img, model).spots)

    viewer, widget = detect_widget
    img, bright = spots_in_texture(seed=3)
    viewer.add_image(img, name="texture")
    widget._choices.model_kind.value = "default"
    widget._choices.device.value = "cpu"
    run_and_wait(widget, timeout=WAIT_MS)
    spots = next(lay for lay in viewer.layers if "spotdetect" in lay.metadata)
    from napari_spotdetect.core.models.zoo import load_model

    model = load_model("default", device="cpu")
    tuned = widget._floor.value
    assert tuned == model.default_contrast_floor  # the model's own floor to start with
    counts, precision = {}, {}
    for k in (0.0, 0.35, 0.8):
        widget._floor.value = k
        counts[k] = widget.apply_threshold(0.05)  # a low threshold: the texture is called
        assert len(spots.data) == counts[k]
        precision[k] = match_spots(spots.data, bright, 2.0).precision
    assert counts[0.0] > 2 * counts[0.35] and counts[0.35] >= counts[0.8], counts
    assert precision[0.35] > precision[0.0] + 0.3, precision
    assert match_spots(spots.data, bright, 2.0).recall >= 0.9
    assert spots.metadata["spotdetect"]["contrast_floor"] == 0.8
    assert widget._status.value.startswith(f"Done: {counts[0.8]} spots at threshold 0.05, contrast floor 0.80")
    widget._tuned.native.click()
    assert widget._floor.value == tuned
    assert len(spots.data) == detect_count(img, model)
