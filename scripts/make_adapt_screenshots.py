"""Screenshots of the adaptation loop for the tutorial: a region drawn, its spots marked, calibrated; the
suggestion of where to click next (docs/adapt_calibrated.png, docs/adapt_suggest.png).

Uses the bundled default model on the synthetic smFISH sample. Needs a display:
    xvfb-run -a -s "-screen 0 1400x1000x24" python scripts/make_adapt_screenshots.py
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _settle(app, n=20):
    for _ in range(n):
        app.processEvents()
        time.sleep(0.02)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs"))
    args = ap.parse_args()
    import napari
    import torch
    from qtpy.QtWidgets import QApplication

    from napari_spotdetect import layer_keys as K
    from napari_spotdetect import load_model
    from napari_spotdetect.core.groundtruth.regions import inside
    from napari_spotdetect.widgets import adapt_widget

    torch.set_num_threads(1)
    adapt_widget.DEFAULT_OUT = Path(tempfile.mkdtemp())  # not the user's model folder
    out = Path(args.out)
    viewer = napari.Viewer()
    viewer.window.resize(1400, 900)
    app = QApplication.instance()
    viewer.open_sample("napari-spotdetect", "smfish_2d")
    truth = viewer.layers["true spots"]
    truth.visible = False
    _d, detect = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Detect spots")
    detect.set_image(viewer.layers["smFISH (synthetic)"])
    detect.set_model(load_model("default", device="cpu"))
    detect.run()
    while detect.running:
        app.processEvents()
        time.sleep(0.05)
    _d, adapt = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Teach it your spots")
    adapt.native.parent().parent().raise_()
    box = (40, 40, 200, 200)
    adapt._draw.native.click()
    viewer.layers[adapt_widget.REGIONS_LAYER].add_rectangles(np.array([[box[0], box[1]], [box[2] - 1, box[3] - 1]]))
    pts = np.asarray(truth.data)
    viewer.add_points(pts[inside(pts, box)], name="my spots", symbol="square", face_color="transparent",
                      border_color="lime", size=9)
    adapt._spots.value = viewer.layers["my spots"]
    adapt._regions.value = viewer.layers[adapt_widget.REGIONS_LAYER]
    adapt._calibrate.native.click()
    det = next(lay for lay in viewer.layers if K.is_detection(lay))
    viewer.layers.selection.active = det
    viewer.camera.zoom = 2.0
    viewer.camera.center = (190, 190)
    _settle(app)
    viewer.screenshot(str(out / "adapt_calibrated.png"), canvas_only=False)
    viewer.camera.zoom = 1.3
    adapt._suggest.native.click()  # centres the view on the suggestion
    _settle(app)
    viewer.screenshot(str(out / "adapt_suggest.png"), canvas_only=False)
    print(adapt._status.value)
    viewer.close()


if __name__ == "__main__":
    main()
