"""Screenshots of "Measure and count spots" and "Filter spots by feature" on the 2-D sample, for the docs.

Detects with the bundled default model, adds synthetic cell and nucleus labels (Voronoi cells around a few
seeds), fits the spots, counts them per cell and cuts on SNR. Needs a display:
    xvfb-run -a -s "-screen 0 1280x1024x24" python scripts/make_biology_screenshots.py [--out docs]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def toy_cells(shape, n: int = 9, seed: int = 2):
    """Voronoi cells (limited to 150 px from their seed) and round nuclei: a stand-in for a segmentation."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    seeds = rng.uniform(60, np.array(shape) - 60, (n, 2))
    yy, xx = np.indices(shape)
    pix = np.column_stack([yy.ravel(), xx.ravel()])
    dist, idx = cKDTree(seeds).query(pix)
    cells = np.where(dist < 150, idx + 1, 0).reshape(shape).astype(np.int32)
    nuclei = np.where(dist < 45, idx + 1, 0).reshape(shape).astype(np.int32)
    return cells, nuclei


def settle(app, widget=None, timeout=300):
    t0 = time.time()
    while widget is not None and widget.running and time.time() - t0 < timeout:
        app.processEvents()
        time.sleep(0.02)
    for _ in range(20):
        app.processEvents()
        time.sleep(0.01)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs"))
    args = ap.parse_args()
    os.environ.setdefault("NAPARI_SPOTDETECT_SETTINGS", str(Path(tempfile.mkdtemp()) / "settings.json"))
    import napari
    import torch
    from qtpy.QtWidgets import QApplication

    torch.set_num_threads(1)
    out = Path(args.out)
    app = QApplication.instance() or QApplication([])
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 950)
    viewer.open_sample("napari-spotdetect", "smfish_2d")
    image = viewer.layers["smFISH (synthetic)"]
    image.scale = (0.11, 0.11)  # as a microscope would give: um per pixel
    viewer.layers["true spots"].scale = (0.11, 0.11)
    _d, detect = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Detect spots")
    detect._choices.device.value = "cpu"
    detect.run()
    settle(app, detect)
    cells, nuclei = toy_cells(image.data.shape)
    viewer.add_labels(cells, name="cells", scale=(0.11, 0.11), opacity=0.25)
    viewer.add_labels(nuclei, name="nuclei", scale=(0.11, 0.11), opacity=0.25, visible=False)
    spots = viewer.layers["smFISH (synthetic) spots"]
    _d, measure = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Measure and count spots")
    measure.set_layer(spots)
    measure.set_labels(viewer.layers["cells"], viewer.layers["nuclei"])
    measure.fit()
    settle(app, measure)
    measure.count()
    _d, filt = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Filter spots by feature")
    filt.set_layer(spots)
    filt.set_feature("snr")
    lo, hi = filt.cut_limits
    filt.set_cut(lo + 0.12 * (hi - lo), hi)
    filt.apply()
    viewer.layers.selection.active = spots
    viewer.reset_view()
    viewer.scene.camera.zoom *= 2.2
    viewer.scene.camera.center = (0, 20, 22)
    settle(app)
    viewer.screenshot(str(out / "measure_viewer.png"), canvas_only=False)
    measure.native.grab().save(str(out / "measure_widget.png"))
    filt.native.grab().save(str(out / "filter_widget.png"))
    print("wrote", [str(out / n) for n in ("measure_viewer.png", "measure_widget.png", "filter_widget.png")])
    viewer.close()


if __name__ == "__main__":
    main()
