"""Snapping a spot added with A next to a brighter, already marked neighbour (4.2-4.4 px apart)."""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.key_bindings import coerce_keybinding


def _two_spots(sep: float, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 48x48 image with a bright spot A and a spot B four times dimmer ``sep`` px to its right."""
    a, b = np.array([24.0, 20.0]), np.array([24.0, 20.0 + sep])
    yy, xx = np.mgrid[:48, :48]
    img = 100 + rng.normal(0, 3, (48, 48))
    for centre, amp in ((a, 4000.0), (b, 1000.0)):
        img += amp * np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * 1.3 ** 2))
    return img.astype(np.float32), a, b


@pytest.mark.parametrize("sep", [4.2, 4.4])
def test_a_next_to_a_marked_bright_spot_marks_the_dim_one(make_napari_viewer, sep):
    rng = np.random.default_rng(int(sep * 10))
    img, a, b = _two_spots(sep, rng)
    viewer = make_napari_viewer()
    image = viewer.add_image(img, name="img")
    truth = viewer.add_points(a[None, :], name="truth")  # A already has its point; B has none
    _dock, correct = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Correct spots")
    correct.set_layer(truth)
    correct.set_image(image)
    press_a = truth.keymap[coerce_keybinding("a")]
    offsets = [(dy, dx) for dy in (-1.0, 0.0, 1.0) for dx in (-1.2, -0.6, 0.0, 0.6)]
    for dy, dx in offsets:  # clicks around B, all nearer to B than to A
        viewer.cursor.position = tuple(b + (dy, dx))
        press_a(truth)
        new = truth.data[-1]
        assert np.linalg.norm(new - b) < 0.5, ((dy, dx), new, b)  # on B, not on A nor pulled towards it
        truth.selected_data = {len(truth.data) - 1}
        truth.remove_selected()
    assert len(truth.data) == 1
