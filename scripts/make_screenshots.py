"""Screenshots of the detection, correction, QC and fine-tuning widgets on the sample data, for the docs (docs/*.png).

Uses the real piscis fixture model from ../shared (or --model PATH). Needs a display:
    xvfb-run -a -s "-screen 0 1400x1000x24" python scripts/make_screenshots.py \
        [--only detect|hitl|finetune|laptop|folder|real|floor]
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


def shoot(viewer, app, path: Path, zoom: float, center) -> None:
    """Frame the canvas, let Qt draw it, and save a whole-window screenshot."""
    viewer.scene.camera.zoom = zoom
    viewer.scene.camera.center = tuple(center)
    for _ in range(10):
        app.processEvents()
    viewer.screenshot(str(path), canvas_only=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a model file, or 'default' for the bundled model (default: the piscis "
                    "fixture, decompressed)")
    ap.add_argument("--out", default=str(ROOT / "docs"))
    ap.add_argument("--only", choices=["detect", "hitl", "finetune", "laptop", "folder", "real", "floor"],
                    help="make one group of screenshots (default: all)")
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
        if args.only in (None, "real"):
            real_screenshot(out, app)
        if args.only in (None, "floor"):
            floor_screenshots(out, app)
        if args.only in (None, "folder"):
            folder_screenshots(model, out, app)
        if args.only in (None, "laptop"):
            laptop_screenshots(model, out, app)
        if args.only in (None, "hitl"):
            correct_and_qc_screenshots(model, out, app, tmp)
        if args.only in (None, "finetune"):
            finetune_screenshots(app, out, model)
        detect_shots = (("smfish_2d", "detect_2d", 2.0), ("smfish_stack", "detect_stack", 3.0))
        for sample, name, zoom in detect_shots if args.only in (None, "detect") else ():
            viewer = napari.Viewer(show=True)
            viewer.window.resize(1400, 900)
            viewer.open_sample("napari-spotdetect", sample)
            _dock, widget = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Detect spots")
            if str(model) == "default":
                widget.choose_model("default")
            else:
                widget.choose_model("file", model)
            widget._choices.device.value = "cpu"
            widget.run()
            wait(widget, app)
            viewer.layers["true spots"].visible = True
            if sample == "smfish_stack":
                viewer.dims.set_point(0, 4)
            shoot(viewer, app, out / f"{name}.png", zoom, (0, 128, 128) if sample == "smfish_stack" else (128, 128))
            if sample == "smfish_2d":
                widget.native.grab().save(str(out / "detect_widget_panel.png"))
            viewer.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("wrote", sorted(p.name for p in out.glob("*.png")))


def _detected_on_real(app, source: str, stem: str, image_name: str, truth_name: str, size: float):
    """A viewer with a real val image, its annotation (magenta rings) and the bundled model's detection, or
    None without ../shared. Returns (viewer, Detect panel)."""
    import napari
    import numpy as np
    import pandas as pd
    import tifffile

    root = ROOT.parent / "shared" / "data" / "real" / source
    if not root.exists():
        print("no real data at", root, f"- skipping the {source} screenshots")
        return None
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 900)
    img = tifffile.imread(root / "images" / f"{stem}.tif")
    viewer.add_image(img, name=image_name, colormap="gray",
                     contrast_limits=tuple(float(v) for v in np.percentile(img, (1, 99.9))))
    truth = pd.read_csv(root / "spots" / f"{stem}.csv")[["y", "x"]].to_numpy()
    viewer.add_points(truth, name=truth_name, size=size, face_color="transparent",
                      border_color="magenta", border_width=0.12)
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Detect spots")
    widget.choose_model("default")
    widget._choices.device.value = "cpu"
    widget.run()
    wait(widget, app)
    return viewer, widget


def real_screenshot(out: Path, app) -> None:
    """The bundled model on a real val image (Piscis paper's macrophages panel) beside its expert annotation."""
    shown = _detected_on_real(app, "piscis_panels", "macrophages", "macrophages (real, val)", "expert annotation", 9)
    if shown is not None:
        shoot(shown[0], app, out / "detect_real.png", 2.2, (128, 128))
        shown[0].close()


def floor_screenshots(out: Path, app) -> None:
    """The contrast floor on the crowd-annotated RCA image (insta_rca cy3, val): the bundled model at floor 0
    (every candidate above the threshold) and at 0.35, beside the crowd's consensus in magenta."""
    shown = _detected_on_real(app, "insta_rca", "cy3_500pxroi", "RCA cy3 (real, val)", "crowd consensus", 13)
    if shown is None:
        return
    viewer, widget = shown
    for k, name in ((0.0, "floor_0"), (0.35, "floor_035")):
        widget._floor.value = k
        widget.apply_threshold()
        for _ in range(10):
            app.processEvents()
        shoot(viewer, app, out / f"{name}.png", 1.6, (250, 250))
    viewer.close()


def finetune_screenshots(app, out: Path, model) -> None:
    """The fine-tuning panel mid-training (live plot) and after, on two images of a kind the model has not seen.

    Synthetic "large_spots" images (wider spots than the model knows); their true spots stand in for the
    user's corrections. One image trains, the other validates, so the F1 curve is an honest one.
    """
    import napari
    from qtpy.QtWidgets import QScrollArea

    from napari_spotdetect.core.training.synthetic import synthetic_dataset

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 1000)
    for name, (img, pts) in zip("AB", synthetic_dataset(2, "large_spots", seed=11, shape=(256, 256))):
        viewer.add_image(img, name=f"image {name}", colormap="gray", visible=name == "A")
        viewer.add_points(pts, name=f"image {name}: correct spots", size=11, face_color="transparent",
                          border_color="#40e0d0", border_width=0.1, symbol="square", visible=False)
    _dock, detect = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Detect spots")
    _dock, tune = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Fine-tune on my spots")
    detect.set_image(viewer.layers["image A"])
    detect.choose_model("file", model)
    detect._choices.device.value = "cpu"
    detect._choices.maps.value = False
    detect.run()
    wait(detect, app)
    ex, st = tune.examples, tune.settings  # the panel's controls, set as a user sets them
    for row, name in enumerate("AB"):
        if row >= len(ex.rows):
            ex.add_button.native.click()
        ex.rows[row].image.value = viewer.layers[f"image {name}"]
        ex.rows[row].points.value = viewer.layers[f"image {name}: correct spots"]
    st.start.reset_choices()
    st.start.value = "last"
    st.epochs.value, st.steps.value, st.val_percent.value = 5, 4, 50
    st.save_in.value, st.model_name.value = Path(tempfile.mkdtemp()), "my-finetuned-model"
    tune.train_button.native.click()
    t0 = time.time()
    while tune.running and len(tune.plot.val_f1) < 3 and time.time() - t0 < 900:  # before + 2 epochs
        app.processEvents()
        time.sleep(0.02)
    while tune.running and len(tune.plot.step_loss) < 10 and time.time() - t0 < 900:
        app.processEvents()
        time.sleep(0.02)
    for _ in range(10):
        app.processEvents()
    tune.body.native.grab().save(str(out / "finetune_training.png"))
    wait(tune, app, timeout=900)
    for _ in range(10):
        app.processEvents()
    tune.body.native.grab().save(str(out / "finetune_done.png"))
    tune.new_model.use_run_button.native.click()  # "Use it and detect again"
    wait(detect, app)
    viewer.layers["image A: correct spots"].visible = True
    scroll = tune.native.findChild(QScrollArea)
    scroll.ensureWidgetVisible(tune.new_model.outcome.native)  # show the plot and the result in the dock
    shoot(viewer, app, out / "finetune_viewer.png", 3.0, (96, 96))
    viewer.close()


def correct_and_qc_screenshots(model, out: Path, app, tmp: Path) -> None:
    """The correction widget with its review list, then the QC widget with TP/FP/FN on the canvas."""
    import napari
    import numpy as np
    from scipy.spatial.distance import cdist

    from napari_spotdetect.core.training.synthetic import synthetic_image

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 900)
    # a harder image than the sample (crowded, dim, noisy): the model makes mistakes worth showing
    img, true_xy = synthetic_image((256, 256), n_spots=250, seed=5, amplitude=(40.0, 400.0), read_noise=20.0,
                                   min_distance=2.5)
    viewer.add_image(img, name="smFISH (synthetic)", colormap="gray")
    viewer.add_points(true_xy, name="true spots", size=9, face_color="transparent", border_color="#40e0d0",
                      border_width=0.1, symbol="square", visible=False)
    _d, det = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Detect spots")
    det.choose_model("file", model)
    det._choices.device.value = "cpu"
    det._choices.maps.value = False
    det.run()
    wait(det, app)
    from napari_spotdetect import layer_keys as K

    spots = next(lay for lay in viewer.layers if K.is_detection(lay))
    truth = viewer.layers["true spots"]
    det._threshold.value = 0.3  # below the tuned 0.5: more doubtful spots to review
    det.apply_threshold()
    print("screenshot:", len(spots.data), "spots,", len(truth.data), "true")
    viewer.window.remove_dock_widget("all")
    _d, cor = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Correct spots")
    cor.set_layer(spots)
    cor._folder.value = tmp
    gt = cor.start_ground_truth()
    # one correction of each kind, as a user would make them
    d = cdist(gt.data, truth.data).min(axis=1)
    gt.selected_data = {int(np.argmax(d))}
    gt.remove_selected()
    missed = truth.data[cdist(truth.data, gt.data).min(axis=1) > 3]
    centre = np.array([96.0, 96.0])
    if len(missed):
        near = missed[np.argmin(np.linalg.norm(missed - centre, axis=1))]
        gt.add(near + 0.8)
        centre = near
    gt.mode = "select"
    cor.refresh_review()
    shoot(viewer, app, out / "correct_widget.png", 4.0, centre)
    viewer.window.remove_dock_widget("all")
    _d, qc = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Check against ground truth")
    gt.visible = False
    spots.visible = True
    qc.set_layers(spots, truth, all_images=False)
    qc.compare()
    shoot(viewer, app, out / "qc_widget.png", 4.0, (96.0, 96.0))
    viewer.close()



def laptop_screenshots(model, out: Path, app) -> None:
    """The panels on a 1366 x 768 laptop screen: the four docks at once, then the tabbed dock mid-correction."""
    import napari

    from napari_spotdetect import layer_keys as K

    for name in ("panels_1366x768_docks", "panels_1366x768_tabs"):
        viewer = napari.Viewer(show=True)
        viewer.window._qt_window.showNormal()
        viewer.window.resize(1366, 768)
        viewer.open_sample("napari-spotdetect", "smfish_2d")
        if name.endswith("docks"):
            docks = [viewer.window.add_plugin_dock_widget("napari-spotdetect", n)[1] for n in (
                "Detect spots", "Correct spots", "Check against ground truth", "Fine-tune on my spots")]
            det = docks[0]
        else:
            _d, panels = viewer.window.add_plugin_dock_widget("napari-spotdetect", "All panels (tabs)")
            det = panels.detect
        det.choose_model("file", model)
        det._choices.device.value = "cpu"
        det.run()
        wait(det, app)
        if name.endswith("tabs"):
            spots = next(lay for lay in viewer.layers if K.is_detection(lay))
            panels.correct.set_layer(spots)
            panels.correct.set_folder(Path(tempfile.mkdtemp()))
            panels.correct.start_ground_truth()
            panels.show_tab("Correct")
        viewer.window.resize(1366, 768)
        shoot(viewer, app, out / f"{name}.png", 2.0, (128, 128))
        print(name, viewer.window._qt_window.size())
        viewer.close()


def folder_screenshots(model, out: Path, app) -> None:
    """The folder loop at 1366 x 768: the first image done, the second detected and being corrected."""
    import napari
    import numpy as np
    import tifffile

    from napari_spotdetect.core.training.synthetic import synthetic_image

    folder = Path(tempfile.mkdtemp()) / "my-images"
    folder.mkdir()
    for i in range(4):
        img, _ = synthetic_image((256, 256), n_spots=80, seed=40 + i)
        tifffile.imwrite(folder / f"cells_{i + 1:02d}.tif", img.astype(np.float32))
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1366, 768)
    _d, panels = viewer.window.add_plugin_dock_widget("napari-spotdetect", "All panels (tabs)")
    det = panels.detect
    det.choose_model("file", model)
    det._choices.device.value = "cpu"
    loop = panels.folder

    def until_truth(name):
        t0 = time.time()
        while (loop.truth_layer() is None or loop.truth_layer().metadata["spotdetect_truth"]["image"] != name) \
                and time.time() - t0 < 300:
            app.processEvents()
            time.sleep(0.02)
        for _ in range(10):
            app.processEvents()

    loop.set_folder(folder)
    until_truth("cells_01")
    loop.truth_layer().add([[128.0, 128.0]])  # one hand-placed spot, as a correction
    loop.mark_done_and_next()  # Ctrl+Enter
    until_truth("cells_02")
    panels.show_tab("Folder")
    shoot(viewer, app, out / "folder_loop.png", 2.0, (128, 128))
    viewer.close()


if __name__ == "__main__":
    main()
