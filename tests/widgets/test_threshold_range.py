"""With the bundled model, the threshold slider does something: scores spread over the slider's range, on the
2-D sample and on a real image, so moving it from 0.05 to 0.95 changes the spot count substantially."""

from __future__ import annotations

import numpy as np
import pytest

from ..conftest import SHARED, need_shared

pytestmark = pytest.mark.widgets


def _counts(viewer, widget, run_and_wait):
    widget._model_kind.value = "default"
    widget._device.value = "cpu"
    run_and_wait(widget, timeout=180_000)
    return {t: widget.apply_threshold(t) for t in (0.05, 0.5, 0.95)}


def test_slider_changes_the_count_on_the_2d_sample(detect_widget, run_and_wait):
    viewer, widget = detect_widget
    viewer.open_sample("napari-spotdetect", "smfish_2d")
    n = _counts(viewer, widget, run_and_wait)
    assert n[0.05] >= 1.3 * n[0.95] and n[0.05] - n[0.95] >= 10, n
    assert n[0.05] >= n[0.5] >= n[0.95]


def test_slider_changes_the_count_on_a_real_image(detect_widget, run_and_wait):
    import tifffile

    root = need_shared(SHARED / "data" / "real" / "piscis_panels")
    viewer, widget = detect_widget
    viewer.add_image(np.asarray(tifffile.imread(root / "images" / "macrophages.tif")), name="macrophages")
    n = _counts(viewer, widget, run_and_wait)
    assert n[0.05] >= 1.3 * n[0.95] and n[0.05] - n[0.95] >= 20, n
