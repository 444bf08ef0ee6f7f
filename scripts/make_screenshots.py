"""Screenshots of the detection widget and its results on the sample data, for the README (docs/*.png).

Uses the real piscis fixture model from ../shared (or --model PATH). Needs a display:
    xvfb-run -a -s "-screen 0 1280x1024x24" python scripts/make_screenshots.py
"""

from __future__ import annotations

import argparse
import lzma
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "piscis" / "piscis_fixture.pt.xz"


def wait(widget, app, timeout=300):
    t0 = time.time()
    while widget.running and time.time() - t0 < timeout:
        app.processEvents()
        time.sleep(0.02)
    for _ in range(20):
        app.processEvents()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a model file (default: the piscis fixture, decompressed)")
    ap.add_argument("--out", default=str(ROOT / "docs"))
    args = ap.parse_args()
    import napari
    import torch
    from qtpy.QtWidgets import QApplication

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    model = args.model
    if model is None:
        model = tmp / "piscis_fixture.pt"
        with lzma.open(FIXTURE) as src, open(model, "wb") as dst:
            shutil.copyfileobj(src, dst)
    import os

    os.environ.setdefault("NAPARI_SPOTDETECT_SETTINGS", str(tmp / "settings.json"))
    app = QApplication.instance() or QApplication([])
    try:
        for sample, name, zoom in (("smfish_2d", "detect_2d", 2.0), ("smfish_stack", "detect_stack", 3.0)):
            viewer = napari.Viewer(show=True)
            viewer.window.resize(1400, 900)
            viewer.open_sample("napari-spotdetect", sample)
            _dock, widget = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Detect spots")
            widget._model_kind.value = "file"
            widget._model_path.value = model
            widget._device.value = "cpu"
            widget.run()
            wait(widget, app)
            viewer.layers["true spots"].visible = True
            if sample == "smfish_stack":
                viewer.dims.set_point(0, 4)
            viewer.scene.camera.zoom = zoom
            viewer.scene.camera.center = (0, 128, 128) if sample == "smfish_stack" else (128, 128)
            for _ in range(10):
                app.processEvents()
            viewer.screenshot(str(out / f"{name}.png"), canvas_only=False)
            if sample == "smfish_2d":
                widget.native.grab().save(str(out / "detect_widget_panel.png"))
            viewer.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("wrote", sorted(p.name for p in out.glob("detect_*.png")))


if __name__ == "__main__":
    main()
