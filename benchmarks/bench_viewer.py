"""How long napari's main thread freezes during a detection from the Detect widget (a benchmark, not a test).

A QTimer heartbeat fires every ``--tick`` ms on the main thread; every gap between two beats longer than
that is time the main thread could not answer the user. A synthetic image is opened, the Detect widget
runs the bundled default model on it ``--runs`` times (the second and later runs replace an unedited
result, which is where the old remove-and-add froze longest), and per run the longest gap, the gap at the
end (from the worker's result to the layers shown) and the total frozen time are reported.

Run under a display (``xvfb-run -a``; see ../shared/headless-napari.md). To compare with another checkout,
point PYTHONPATH at its ``src``:

    xvfb-run -a -s "-screen 0 1280x1024x24" python benchmarks/bench_viewer.py [--size 2048] [--runs 3] [--maps]
        [--label after] [--out benchmarks/results/viewer.json]

Prints a table and writes (merges into) benchmarks/results/viewer.json under ``--label``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tick", type=float, default=10.0, help="heartbeat period, ms")
    ap.add_argument("--maps", action="store_true", help="also show the score map (an Image layer)")
    ap.add_argument("--speed", default=None, help="exact or fast (default: the widget's default)")
    ap.add_argument("--spots", type=int, default=0,
                    help="instead of detections: a result with this many spots at threshold 0.5, then threshold moves")
    ap.add_argument("--budget", type=int, default=None,
                    help="with --spots: markers drawn at most when zoomed out (default: the package's DRAW_BUDGET)")
    ap.add_argument("--label", default="after")
    ap.add_argument("--out", default=str(HERE / "results" / "viewer.json"))
    a = ap.parse_args(argv)
    os.environ.setdefault("QT_API", "pyqt6")
    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    import napari_spotdetect
    from napari_spotdetect.core.training.synthetic import synthetic_image

    viewer = napari.Viewer(show=True)
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-spotdetect", "Detect spots")
    if a.spots:
        threshold_moves(viewer, widget, a)
        return
    image, _ = synthetic_image((a.size, a.size), n_spots=a.size * a.size // 1500, seed=0)
    viewer.add_image(image, name="bench image")
    widget._choices.maps.value = bool(a.maps)
    if a.speed and hasattr(widget, "_speed"):
        widget._choices.speed.value = a.speed
    app = QApplication.instance()

    import gc

    collections: list[tuple] = []  # (start, seconds, generation) of every garbage collection over 50 ms
    gc_start = {}

    def on_gc(phase, info):
        if phase == "start":
            gc_start["t"] = time.perf_counter()
        elif "t" in gc_start and time.perf_counter() - gc_start["t"] > 0.05:
            collections.append((gc_start["t"], time.perf_counter() - gc_start["t"], info["generation"]))

    gc.callbacks.append(on_gc)
    beats: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: beats.append(time.perf_counter()))
    timer.start(int(a.tick))
    rows = []
    for k in range(a.runs):
        beats.clear()
        collections.clear()
        returned = {}
        t0 = time.perf_counter()
        worker = widget.run()
        assert worker is not None, widget.problem()
        worker.returned.connect(lambda *_, returned=returned: returned.setdefault("t", time.perf_counter()))
        progress = []
        worker.yielded.connect(lambda p, progress=progress, t0=t0: progress.append((time.perf_counter() - t0, p.done)))
        while widget.running:
            app.processEvents()
            time.sleep(0.001)
        t1 = time.perf_counter()
        for _ in range(50):  # let napari finish drawing what was added
            app.processEvents()
            time.sleep(0.002)
        t_end = time.perf_counter()
        ts = np.array([t0] + beats + [t_end])
        gaps = np.diff(ts)
        late = gaps - a.tick / 1000
        tr = returned.get("t", t1)
        end = ts[ts >= tr]
        end_gap = float(np.diff(np.concatenate([[tr], end])).max()) if len(end) else float(t_end - tr)
        rows.append({"run": k + 1, "seconds": t1 - t0, "longest_gap_s": float(gaps.max()),
                     "end_gap_s": end_gap, "frozen_total_s": float(late[late > 0.05].sum()),
                     "gaps_over_100ms": int((gaps > 0.1).sum()), "n_layers": len(viewer.layers),
                     # where the long gaps were (seconds from Run), and when the first progress and the result came
                     "long_gaps": [(round(float(ts[i] - t0), 2), round(float(gaps[i]), 2))
                                   for i in np.flatnonzero(gaps > 0.1)],
                     "first_progress_s": progress[0][0] if progress else None,
                     "second_progress_s": progress[1][0] if len(progress) > 1 else None,
                     "result_s": tr - t0,
                     "gc_over_50ms": [(round(c[0] - t0, 2), round(c[1], 2), c[2]) for c in collections]})
        r = rows[-1]
        print(f"run {k + 1}: {r['seconds']:.1f} s, longest main-thread gap {r['longest_gap_s']:.2f} s, at the end "
              f"{r['end_gap_s']:.2f} s, frozen {r['frozen_total_s']:.2f} s in {r['gaps_over_100ms']} gaps > 100 ms",
              flush=True)
    timer.stop()
    res = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "size": a.size, "maps": a.maps,
           "package": str(Path(napari_spotdetect.__file__).parent), "napari": napari.__version__,
           "git": subprocess.run(["git", "-C", str(Path(napari_spotdetect.__file__).parent), "rev-parse", "--short",
                                  "HEAD"], capture_output=True, text=True).stdout.strip(),
           "load_average": os.getloadavg(), "rows": rows}
    out = Path(a.out)
    data = json.loads(out.read_text()) if out.exists() else {}
    data[a.label] = res
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(data, indent=2))
    viewer.close()


def threshold_moves(viewer, widget, a) -> None:
    """The main thread's longest gap while the threshold slider moves over a result of ``--spots`` spots.

    The result is made as a detection's would be (candidates with uniform scores over 4096^2, the bundled
    model's score range) and handed to the widget as a finished worker hands it; then the slider moves as a
    user's drag ends (0.55, 0.45, 0.6, 0.5), each move waited for until the layer holds the new spots and napari
    has drawn them.
    """
    import sys
    from types import SimpleNamespace

    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    import napari_spotdetect as sd

    sys.path.insert(0, str(HERE))
    from bench_points import make_detections

    app = QApplication.instance()
    if a.budget is not None:
        from napari_spotdetect.widgets import light_drawing

        light_drawing.DRAW_BUDGET = a.budget
    model = sd.load_model("default", device="cpu")
    side = 4096
    image = viewer.add_image(np.zeros((side, side), dtype=np.uint8), name="bench image")
    dets = make_detections(2 * a.spots, side)  # uniform scores 0.05-1: about a.spots above 0.5
    dets.provenance.update(model=model.info.name, device="cpu", tiling={}, threshold=0.5)
    widget._on_result(SimpleNamespace(detections=dets, model=model), {"layer": image, "axes": "yx"})
    layer = widget._rethreshold.target
    for _ in range(50):
        app.processEvents()
        time.sleep(0.002)
    beats: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: beats.append(time.perf_counter()))
    timer.start(int(a.tick))
    # when the panel's update starts (it filters the candidates first) and when the layer has its new spots
    # (napari's redraw request ends the update); the paint that follows is timed from the canvas's draw event
    stamps: dict = {}
    set_threshold = dets.set_threshold

    def stamped(value, _f=set_threshold):
        stamps["update_start"] = time.perf_counter()
        return _f(value)

    dets.set_threshold = stamped
    layer.events.set_data.connect(lambda *_: stamps.__setitem__("update_end", time.perf_counter()))
    scene = viewer.window._qt_viewer.canvas._scene_canvas
    scene.events.draw.connect(lambda *_: stamps.setdefault("draw_start", time.perf_counter()), position="first")
    scene.events.draw.connect(lambda *_: stamps.setdefault("draw_end", time.perf_counter()), position="last")
    rows = []
    for t in (0.55, 0.45, 0.6, 0.5):
        beats.clear()
        stamps.clear()
        t0 = time.perf_counter()
        widget._threshold.value = t
        want = dets.count(t)
        while len(layer.data) != want and time.perf_counter() - t0 < 120:
            app.processEvents()
            time.sleep(0.001)
        for _ in range(50):  # let napari draw it
            app.processEvents()
            time.sleep(0.002)
        ts = np.array([t0] + beats + [time.perf_counter()])
        gaps = np.diff(ts)
        update = stamps.get("update_end", np.nan) - stamps.get("update_start", np.nan)
        draw = stamps.get("draw_end", np.nan) - stamps.get("draw_start", np.nan)
        drawn = _markers_drawn(viewer, layer)
        rows.append({"threshold": t, "spots": int(want), "seconds": float(ts[-1] - t0),
                     "longest_gap_s": float(gaps.max()), "gaps_over_200ms": int((gaps > 0.2).sum()),
                     "layer_update_s": float(update), "first_draw_s": float(draw), "markers_drawn": drawn})
        print(f"threshold {t}: {want:,} spots ({drawn:,} drawn), longest main-thread gap {gaps.max():.2f} s "
              f"(layer update {update:.2f} s, then a draw of {draw:.2f} s)", flush=True)
    timer.stop()
    pkg = Path(sd.__file__).parent
    res = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "spots": a.spots, "package": str(pkg),
           "git": subprocess.run(["git", "-C", str(pkg), "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True).stdout.strip(), "load_average": os.getloadavg(), "rows": rows}
    out = Path(a.out)
    data = json.loads(out.read_text()) if out.exists() else {}
    data[a.label] = res
    out.write_text(json.dumps(data, indent=2))
    viewer.close()


def _markers_drawn(viewer, layer) -> int:
    """How many markers the canvas holds for the layer (fewer than its spots where it is drawn thinned)."""
    try:
        visual = viewer.window._qt_viewer.canvas.layer_to_visual[layer]
        return int(len(visual.node.points_markers._data["a_position"]))
    except (AttributeError, KeyError, TypeError):
        return -1


if __name__ == "__main__":
    main()
