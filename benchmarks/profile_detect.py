"""Where the time of one ``detect()`` goes, stage by stage, on the bundled model (or any model).

Each stage is timed by wrapping the function that does it (the code that runs is the package's own, unchanged):

- plane statistics: the percentiles of the plane (bundled model) from a subsample;
- tiling: cutting (and padding) tiles out of the plane;
- normalisation: the tiles scaled to the network's input;
- network: the forward pass, tensor in and out (without the deformable pooling);
- pooling: Piscis's deformable max pooling of the labels along the displacements;
- peak finding: local maxima of each tile's pooled map;
- sub-pixel refinement: the displacement read at each peak and added to it;
- intensities: each spot's raw pixel value;
- spot table: the per-plane DataFrame, the Detections object and ``det.spots``;
- features: contrast and relative contrast (only with ``contrast=True`` or a contrast floor above 0);
- second stage: the bundled model's LoG proposals, their features and the logistic score (which also gives
  contrast and relative contrast).

"other" is the rest of the wall time (checks, progress, Python glue). The rows are medians over ``--repeats``
runs after one warm-up, taken in turns (exact, fast, ...), so the load of a shared machine falls on all alike.

    python benchmarks/profile_detect.py [--size 1024] [--repeats 3] [--threads 2] [--model default]
        [--speeds exact fast] [--contrast] [--out PATH]

Prints a table and writes benchmarks/results/profile_detect.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

STAGES = ("plane statistics", "tiling", "normalisation", "network", "pooling", "peak finding",
          "sub-pixel refinement", "intensities", "spot table", "features", "second stage")


class StageClock:
    """Seconds spent per stage; nested stages are subtracted from the stage they run inside."""

    def __init__(self):
        self.total = defaultdict(float)
        self._stack = []

    @contextmanager
    def stage(self, name):
        t0 = time.perf_counter()
        self._stack.append(0.0)
        try:
            yield
        finally:
            inner = self._stack.pop()
            spent = time.perf_counter() - t0
            self.total[name] += spent - inner
            if self._stack:
                self._stack[-1] += spent

    def wrap(self, owner, attr: str, name: str):
        """Replace ``owner.attr`` by a timed version; returns a function that puts the original back."""
        original = getattr(owner, attr)

        def timed(*args, **kwargs):
            with self.stage(name):
                return original(*args, **kwargs)

        setattr(owner, attr, timed)
        return lambda: setattr(owner, attr, original)


def profile_once(image, model, speed: str, contrast: bool) -> dict:
    """One detect() with every stage timed; seconds by stage, plus 'total' and 'other'."""
    import importlib

    import napari_spotdetect as sd

    # modules by name: ``napari_spotdetect.core.detection.detect`` is also the name of a function in the package
    detect_mod = importlib.import_module("napari_spotdetect.core.detection.detect")
    planes_mod = importlib.import_module("napari_spotdetect.core.detection.planes")
    piscis_mod = importlib.import_module("napari_spotdetect.core.models.piscis")
    piscis_net = importlib.import_module("napari_spotdetect.core.models.piscis_net")

    clock = StageClock()
    undo = [
        clock.wrap(model, "plane_statistics", "plane statistics"),
        clock.wrap(planes_mod, "extract_tile", "tiling"),
        clock.wrap(model, "normalize_tiles", "normalisation"),
        clock.wrap(planes_mod, "forward", "network"),
        clock.wrap(piscis_net, "deformable_pool", "pooling"),
        clock.wrap(model, "tile_candidates", "sub-pixel refinement"),
        clock.wrap(piscis_mod, "local_maxima", "peak finding"),
        clock.wrap(planes_mod, "tile_intensity", "intensities"),
        clock.wrap(planes_mod, "spot_intensity", "intensities"),
        clock.wrap(planes_mod, "plane_frame", "spot table"),
        clock.wrap(detect_mod, "_detections", "spot table"),
        clock.wrap(planes_mod, "add_contrast", "features"),
        clock.wrap(planes_mod, "rescore_frame", "second stage"),
    ]
    try:
        t0 = time.perf_counter()
        det = sd.detect(image, model, speed=speed, contrast=contrast or None)
        with clock.stage("spot table"):
            n = len(det.spots)
        total = time.perf_counter() - t0
    finally:
        for u in reversed(undo):
            u()
        # instance attributes shadowed the class's methods; drop them
        for attr in ("plane_statistics", "normalize_tiles", "tile_candidates"):
            model.__dict__.pop(attr, None)
    out = {s: clock.total.get(s, 0.0) for s in STAGES}
    out["other"] = max(0.0, total - sum(out.values()))
    out["total"] = total
    out["n_spots"] = n
    out["tiling_plan"] = det.provenance["tiling"]
    out["precision"] = det.provenance["precision"]
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="default")
    ap.add_argument("--speeds", nargs="+", default=["exact", "fast"])
    ap.add_argument("--contrast", action="store_true", help="also compute the contrast features (as napari does)")
    ap.add_argument("--out", default=str(HERE / "results" / "profile_detect.json"))
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    import napari_spotdetect as sd
    from napari_spotdetect.core.training.synthetic import synthetic_image

    model = sd.load_model(a.model, device="cpu")
    image, _ = synthetic_image((a.size, a.size), n_spots=a.size * a.size // 1500, seed=0)
    image = image.astype(np.float32)
    for speed in a.speeds:
        sd.detect(image[:256, :256], model, speed=speed)  # warm-up
    runs = {s: [] for s in a.speeds}
    loads = []
    for rep in range(a.repeats):
        order = a.speeds[rep % len(a.speeds):] + a.speeds[:rep % len(a.speeds)]
        for speed in order:
            loads.append(os.getloadavg()[0])
            runs[speed].append(profile_once(image, model, speed, a.contrast))
            print(f"round {rep + 1}: {speed:5s} {runs[speed][-1]['total']:.2f} s  load {loads[-1]:.2f}", flush=True)
    res = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "model": a.model,
           "size": a.size, "threads": a.threads, "repeats": a.repeats, "contrast": a.contrast,
           "torch": torch.__version__,
           "load": {"min": min(loads), "median": float(np.median(loads)), "max": max(loads)}, "speeds": {}}
    for speed, rs in runs.items():
        med = {k: float(np.median([r[k] for r in rs])) for k in (*STAGES, "other", "total")}
        res["speeds"][speed] = {"median_s": med, "runs": rs}
    Path(a.out).parent.mkdir(exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(f"\n{res['date']}  model {a.model}, {a.size}^2, {a.threads} threads, median of {a.repeats}; load average "
          f"{res['load']['min']:.1f}-{res['load']['max']:.1f}\n")
    print("| stage | " + " | ".join(f"{s}: s | share" for s in a.speeds) + " |")
    print("| --- | " + " | ".join("--- | ---" for _ in a.speeds) + " |")
    for k in (*STAGES, "other", "total"):
        cells = []
        for s in a.speeds:
            med = res["speeds"][s]["median_s"]
            cells.append(f"{med[k]:.3f} | {100 * med[k] / med['total']:.1f} %")
        print(f"| {k} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
