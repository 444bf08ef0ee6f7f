"""The Detect panel says what the bundled model left out as no spots (hot pixels, PSF echoes), and the layer's
provenance keeps it for saved tables."""

import numpy as np
from tests.conftest import gaussian_spots, separated_points


def test_the_panel_says_how_many_hot_pixels_it_left_out(detect_widget, run_and_wait):
    viewer, widget = detect_widget
    rng = np.random.default_rng(0)
    pts = separated_points(11, (128, 128), 8, 14.0, seed=1)
    spots, hot = pts[:6], np.rint(pts[6:]).astype(int)
    img = rng.poisson(gaussian_spots((128, 128), spots, 1200.0, 1.3, 800.0)).astype(np.float64)
    img[hot[:, 0], hot[:, 1]] += 2500
    viewer.add_image(img.astype(np.uint16), name="camera")
    widget._choices.model_kind.value = "default"
    widget._choices.device.value = "cpu"
    run_and_wait(widget)
    layer = next(lay for lay in viewer.layers if "spotdetect" in lay.metadata)
    assert len(layer.data) == 6
    assert not any(np.hypot(*(layer.data - h).T).min() < 2 for h in hot)
    left_out = layer.metadata["spotdetect"]["left_out_as_no_spots"]
    assert left_out == {"hot_pixels": 5, "psf_echoes": 0, "plateau_repeats": 0}
    assert widget._status.value.endswith("Left out as no spots: 5 hot pixels."), widget._status.value
