"""How long napari takes to show and to re-threshold 10^4 - 10^6 detected spots.

Runs the widget's own code path (Detections.rethreshold -> points_from_spots -> replace_points) on a
headless viewer, with and without the redraw. Needs a display: run it as
    xvfb-run -a -s "-screen 0 1280x1024x24" python benchmarks/bench_points.py [--sizes 10000 100000]
Prints a table and writes benchmarks/results/points.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd


def make_detections(n: int, side: int = 4096):
    from napari_spotdetect.core.detection.detect import Detections

    rng = np.random.default_rng(0)
    cands = pd.DataFrame({"y": rng.uniform(0, side - 1, n), "x": rng.uniform(0, side - 1, n),
                          "score": rng.uniform(0.05, 1.0, n), "intensity": rng.uniform(100, 1000, n)})
    return Detections(axes="yx", image_shape=(side, side), threshold=0.5, floor=0.05, model_name="bench",
                      score_map="labels", provenance={"threshold": 0.5}, candidates=cands)


def timed(fn, repeat: int = 3) -> float:
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench(n: int, viewer, app) -> dict:
    from napari.layers import Points

    from napari_spotdetect.widgets import layers as L

    dets = make_detections(n)
    spots = dets.rethreshold(0.5)
    coords, feats = L.points_from_spots(spots, "yx")
    kw = L.points_layer_kwargs("spots", feats, score_range=(0.05, 1.0), scale=(1, 1), translate=(0, 0),
                               stack=False, metadata={})

    def add():
        for lay in list(viewer.layers):
            viewer.layers.remove(lay)
        viewer.layers.append(Points(coords, **kw))

    t_add = timed(add, 2)
    t_add_draw = timed(lambda: (add(), app.processEvents()), 2)
    layer = viewer.layers[-1]
    thresholds = iter(np.tile([0.3, 0.7, 0.5, 0.6], 10))

    def rethreshold():
        s = dets.set_threshold(next(thresholds))
        c, f = L.points_from_spots(s, "yx")
        L.replace_points(layer, c, f)

    t_re = timed(rethreshold, 4)
    t_re_draw = timed(lambda: (rethreshold(), app.processEvents()), 4)
    t_filter = timed(lambda: dets.rethreshold(0.3), 3)
    return {"spots_candidates": n, "spots_shown": int(len(coords)), "add_s": t_add, "add_draw_s": t_add_draw,
            "filter_s": t_filter, "rethreshold_s": t_re, "rethreshold_draw_s": t_re_draw}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "points.json"))
    args = ap.parse_args()
    import napari
    import torch
    from qtpy.QtWidgets import QApplication

    torch.set_num_threads(1)
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    rows = [bench(n, viewer, app) for n in args.sizes]
    viewer.close()
    print(f"{'candidates':>11} {'shown':>9} {'add':>8} {'add+draw':>9} {'filter':>8} {'re-thr':>8} {'re+draw':>8}  (s)")
    for r in rows:
        print(f"{r['spots_candidates']:>11,} {r['spots_shown']:>9,} {r['add_s']:>8.3f} {r['add_draw_s']:>9.3f} "
              f"{r['filter_s']:>8.3f} {r['rethreshold_s']:>8.3f} {r['rethreshold_draw_s']:>8.3f}")
    from napari_spotdetect.core.io.spots_io import atomic_write_text

    meta = {"napari": napari.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "cpus_note": "shared 2-core box, software OpenGL (Xvfb + llvmpipe)",
            "notes": "best of 2-4 runs; 'shown' = spots above threshold 0.5 (about half the candidates); "
                     "re-thr = filter cached table + replace layer data/features in one batch"}
    atomic_write_text(Path(args.out), json.dumps({"meta": meta, "rows": rows}, indent=2))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
